//! Log shipping: a job's stdout and stderr become `Logs` reports, line by line, in the order the
//! lines were read. Independent of the runner, so the docker runner can reuse it.

use std::time::Duration;

use barge_core::agent::{AgentReport, LogLine};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::epoch_ms;
use crate::limits::{
    LOG_BATCH_BYTES_MAX, LOG_BATCH_LINES_MAX, LOG_DRAIN_AFTER_EXIT_MS, LOG_FLUSH_INTERVAL_MS,
    LOG_LINES_QUEUED_MAX, LOG_LINE_BYTES_MAX, LOG_READ_BUFFER_BYTES,
};

/// Reads both streams to EOF and sends their lines to `reports`. Returns once every line read has
/// been queued, so an `Exited` sent afterwards comes after all of the attempt's output. Once
/// `exited` turns true, the streams get `LOG_DRAIN_AFTER_EXIT_MS` more to reach EOF.
pub(crate) async fn ship<O, E>(
    stdout: Option<O>,
    stderr: Option<E>,
    job_id: &str,
    attempt_id: &str,
    reports: &mpsc::Sender<AgentReport>,
    exited: watch::Receiver<bool>,
) where
    O: AsyncRead + Unpin,
    E: AsyncRead + Unpin,
{
    let (line_tx, line_rx) = mpsc::channel(LOG_LINES_QUEUED_MAX);
    tokio::join!(
        read_lines(stdout, line_tx.clone(), exited.clone()),
        read_lines(stderr, line_tx, exited),
        batch_lines(line_rx, job_id, attempt_id, reports),
    );
}

async fn read_lines<R: AsyncRead + Unpin>(
    stream: Option<R>,
    lines: mpsc::Sender<LogLine>,
    mut exited: watch::Receiver<bool>,
) {
    let Some(stream) = stream else { return };
    let mut reader = BufReader::with_capacity(LOG_READ_BUFFER_BYTES, stream);
    let drain_deadline = async {
        // An error means the supervisor is gone, so the process is too: start draining.
        let _ = exited.wait_for(|exited| *exited).await;
        tokio::time::sleep(Duration::from_millis(LOG_DRAIN_AFTER_EXIT_MS)).await;
    };
    tokio::pin!(drain_deadline);
    let mut line = Vec::new();
    loop {
        tokio::select! {
            read = next_line(&mut reader, &mut line) => match read {
                Ok(true) => {
                    let message = String::from_utf8_lossy(&line).into_owned();
                    let log_line = LogLine { timestamp_ms: epoch_ms(), message };
                    // Waiting here is the backpressure that keeps memory bounded.
                    if lines.send(log_line).await.is_err() {
                        return;
                    }
                }
                Ok(false) => return,
                Err(err) => {
                    tracing::warn!(%err, "reading job output failed; the rest is lost");
                    return;
                }
            },
            () = &mut drain_deadline => {
                tracing::warn!("job output still open after its processes exited; not read further");
                return;
            }
        }
    }
}

/// Reads one line into `line`, without its `\n`, splitting lines longer than
/// `LOG_LINE_BYTES_MAX`. Returns false at EOF with nothing read. A UTF-8 character cut by a split
/// becomes replacement characters; that only happens in lines over the limit.
async fn next_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    line: &mut Vec<u8>,
) -> std::io::Result<bool> {
    line.clear();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(!line.is_empty());
        }
        let room = LOG_LINE_BYTES_MAX - line.len();
        // Look one byte past the room, so that a line of exactly the maximum still ends at its own
        // newline instead of being followed by an empty line.
        let search = &available[..available.len().min(room + 1)];
        if let Some(end) = search.iter().position(|&byte| byte == b'\n') {
            line.extend_from_slice(&available[..end]);
            reader.consume(end + 1);
            return Ok(true);
        }
        if room == 0 {
            return Ok(true);
        }
        let taken = available.len().min(room);
        line.extend_from_slice(&available[..taken]);
        reader.consume(taken);
    }
}

/// Groups lines into `Logs` reports: a line waits at most `LOG_FLUSH_INTERVAL_MS`, and a report
/// holds at most `LOG_BATCH_LINES_MAX` lines and `LOG_BATCH_BYTES_MAX` message bytes.
async fn batch_lines(
    mut lines: mpsc::Receiver<LogLine>,
    job_id: &str,
    attempt_id: &str,
    reports: &mpsc::Sender<AgentReport>,
) {
    let mut batch: Vec<LogLine> = Vec::new();
    let mut batch_bytes = 0;
    let mut flush_at: Option<Instant> = None;
    let flush = |batch: &mut Vec<LogLine>| AgentReport::Logs {
        job_id: job_id.to_owned(),
        attempt_id: attempt_id.to_owned(),
        lines: std::mem::take(batch),
    };
    loop {
        let deadline = flush_at;
        tokio::select! {
            line = lines.recv() => {
                let Some(line) = line else { break };
                if !batch.is_empty() && batch_bytes + line.message.len() > LOG_BATCH_BYTES_MAX {
                    // A closed queue means the agent is going away; keep reading regardless so
                    // that the job never blocks on a full pipe.
                    let _ = reports.send(flush(&mut batch)).await;
                }
                if batch.is_empty() {
                    batch_bytes = 0;
                    flush_at = Some(Instant::now() + Duration::from_millis(LOG_FLUSH_INTERVAL_MS));
                }
                batch_bytes += line.message.len();
                batch.push(line);
                if batch.len() >= LOG_BATCH_LINES_MAX {
                    let _ = reports.send(flush(&mut batch)).await;
                    flush_at = None;
                }
            }
            () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                let _ = reports.send(flush(&mut batch)).await;
                flush_at = None;
            }
        }
    }
    if !batch.is_empty() {
        let _ = reports.send(flush(&mut batch)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: &[u8]) -> Vec<Vec<u8>> {
        let mut reader = BufReader::new(input);
        let mut line = Vec::new();
        let mut lines = Vec::new();
        while next_line(&mut reader, &mut line).await.unwrap() {
            lines.push(line.clone());
        }
        lines
    }

    #[tokio::test]
    async fn lines_lose_their_newline_and_a_last_unterminated_line_is_kept() {
        let lines = lines_of(b"one\n\nthree\nfour").await;
        assert_eq!(
            lines,
            vec![
                b"one".to_vec(),
                b"".to_vec(),
                b"three".to_vec(),
                b"four".to_vec()
            ]
        );
    }

    #[tokio::test]
    async fn long_lines_are_split_at_the_maximum() {
        let mut input = vec![b'a'; LOG_LINE_BYTES_MAX * 2 + 10];
        input.push(b'\n');
        input.extend_from_slice(&vec![b'b'; LOG_LINE_BYTES_MAX]);
        input.extend_from_slice(b"\nend\n");
        let lengths: Vec<usize> = lines_of(&input).await.iter().map(Vec::len).collect();
        // The line of exactly the maximum is not followed by an empty line.
        assert_eq!(
            lengths,
            vec![
                LOG_LINE_BYTES_MAX,
                LOG_LINE_BYTES_MAX,
                10,
                LOG_LINE_BYTES_MAX,
                3
            ]
        );
    }

    #[tokio::test]
    async fn batches_respect_the_line_and_byte_maximums_and_keep_order() {
        let (line_tx, line_rx) = mpsc::channel(LOG_LINES_QUEUED_MAX);
        let (report_tx, mut report_rx) = mpsc::channel(1024);
        let total_lines = LOG_BATCH_LINES_MAX + 1 + 8;
        let producer = async move {
            for n in 0..LOG_BATCH_LINES_MAX + 1 {
                let message = n.to_string();
                line_tx
                    .send(LogLine {
                        timestamp_ms: 0,
                        message,
                    })
                    .await
                    .unwrap();
            }
            for n in 0..8 {
                let message = format!("{n}{}", "x".repeat(LOG_LINE_BYTES_MAX - 1));
                line_tx
                    .send(LogLine {
                        timestamp_ms: 0,
                        message,
                    })
                    .await
                    .unwrap();
            }
        };
        tokio::join!(producer, batch_lines(line_rx, "j", "a", &report_tx));
        drop(report_tx);

        let mut received = Vec::new();
        while let Some(AgentReport::Logs { lines, .. }) = report_rx.recv().await {
            assert!(lines.len() <= LOG_BATCH_LINES_MAX);
            let bytes: usize = lines.iter().map(|line| line.message.len()).sum();
            assert!(bytes <= LOG_BATCH_BYTES_MAX, "{bytes} bytes in one report");
            received.extend(lines);
        }
        assert_eq!(received.len(), total_lines);
        for (n, line) in received.iter().take(LOG_BATCH_LINES_MAX + 1).enumerate() {
            assert_eq!(line.message, n.to_string());
        }
        for (n, line) in received.iter().skip(LOG_BATCH_LINES_MAX + 1).enumerate() {
            assert!(line.message.starts_with(&n.to_string()));
        }
    }
}
