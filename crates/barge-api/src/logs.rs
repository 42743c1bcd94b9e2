//! The CloudWatch Logs subset (awsJson1.1, `X-Amz-Target: Logs_20140328.<Operation>`) that
//! `aws logs get-log-events`, `filter-log-events`, `describe-log-streams`, `describe-log-groups`
//! and `aws logs tail` use. All of Barge's job output lives in one log group, /aws/batch/job.

use barge_core::limits::*;
use barge_core::model::{LogStream, LOG_GROUP_NAME};
use barge_core::State;
use barge_store::{Direction, LogReader, StoredEvent};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::wire::{compact, parse};
use crate::Answer;

/// How many rows one FilterLogEvents call examines at most, so a selective pattern over a
/// large group answers promptly with a nextToken instead of scanning everything.
const FILTER_SCAN_ROWS_MAX: usize = 100_000;

/// Handles one CloudWatch Logs call. Blocking (it reads the store): run it off the async
/// executor.
pub fn logs_operation(state: &State, reader: &LogReader, target: &str, body: &[u8]) -> Answer {
    let result = match target.strip_prefix("Logs_20140328.") {
        Some("GetLogEvents") => get_log_events(state, reader, body),
        Some("FilterLogEvents") => filter_log_events(state, reader, body),
        Some("DescribeLogStreams") => describe_log_streams(state, body),
        Some("DescribeLogGroups") => describe_log_groups(state, body),
        Some(op) => Err(ApiError::logs_invalid(format!(
            "{op} is not supported by Barge, which serves GetLogEvents, FilterLogEvents, DescribeLogStreams and DescribeLogGroups"
        ))),
        None => Err(ApiError {
            status: 400,
            code: "UnknownOperationException",
            message: format!("X-Amz-Target {target:?} is not a CloudWatch Logs operation"),
        }),
    };
    Answer::from_result(result)
}

fn group_arn(state: &State) -> String {
    format!(
        "arn:aws:logs:{}:{}:log-group:{LOG_GROUP_NAME}",
        state.identity.region, state.identity.account_id
    )
}

/// Checks that the request names Barge's one log group, by name or identifier (ARN).
fn check_group(
    state: &State,
    name: &Option<String>,
    identifier: &Option<String>,
) -> Result<(), ApiError> {
    let given = match (name, identifier) {
        (Some(_), Some(_)) => {
            return Err(ApiError::logs_invalid(
                "Give logGroupName or logGroupIdentifier, not both",
            ))
        }
        (Some(n), None) => n.clone(),
        (None, Some(i)) => {
            let arn = group_arn(state);
            if i == &arn || i == &format!("{arn}:*") {
                LOG_GROUP_NAME.to_string()
            } else {
                i.clone()
            }
        }
        (None, None) => {
            return Err(ApiError::logs_invalid(
                "Missing required member logGroupName",
            ))
        }
    };
    if given == LOG_GROUP_NAME {
        Ok(())
    } else {
        Err(ApiError::logs_not_found(
            "The specified log group does not exist.",
        ))
    }
}

fn limit(v: Option<i64>, max: usize) -> Result<usize, ApiError> {
    match v {
        None => Ok(max),
        Some(n) if n >= 1 && n as u64 <= max as u64 => Ok(n as usize),
        Some(n) => Err(ApiError::logs_invalid(format!(
            "limit must be between 1 and {max}, got {n}"
        ))),
    }
}

/// Keeps events up to the page's byte budget (CloudWatch: 1 MB per response).
fn within_bytes(events: Vec<StoredEvent>) -> Vec<StoredEvent> {
    let mut total = 0;
    events
        .into_iter()
        .take_while(|e| {
            total += e.message.len() + 26;
            total <= LOG_EVENTS_PAGE_BYTES_MAX
        })
        .collect()
}

fn event_id(e: &StoredEvent) -> String {
    format!("{:016x}{:016x}", e.stream, e.seq)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetLogEventsInput {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_name: String,
    start_time: Option<i64>,
    end_time: Option<i64>,
    next_token: Option<String>,
    limit: Option<i64>,
    start_from_head: Option<bool>,
}

fn get_log_events(state: &State, reader: &LogReader, body: &[u8]) -> Result<Value, ApiError> {
    let i: GetLogEventsInput = parse(body).map_err(|e| ApiError::logs_invalid(e.message))?;
    check_group(state, &i.log_group_name, &i.log_group_identifier)?;
    let stream = state
        .log_streams
        .get(&i.log_stream_name)
        .ok_or_else(|| ApiError::logs_not_found("The specified log stream does not exist."))?;
    let limit = limit(i.limit, LOG_EVENTS_PAGE_MAX)?;
    // Tokens are "f/<seq>" (events from seq on) and "b/<seq>" (events before seq).
    let (direction, cursor) = match i.next_token.as_deref() {
        Some(t) => {
            let bad = || {
                ApiError::logs_invalid(format!(
                    "nextToken {t:?} is not a token this stream returned"
                ))
            };
            let (dir, seq) = t.split_once('/').ok_or_else(bad)?;
            let seq: u64 = seq.parse().map_err(|_| bad())?;
            match dir {
                "f" => (Direction::Forward, seq),
                "b" => (Direction::Backward, seq),
                _ => return Err(bad()),
            }
        }
        None if i.start_from_head.unwrap_or(false) => (Direction::Forward, 0),
        None => (Direction::Backward, u64::MAX),
    };
    let mut events = reader
        .stream_events(
            stream.number,
            cursor,
            direction,
            i.start_time,
            i.end_time,
            limit,
        )
        .map_err(|e| ApiError::server(e.to_string()))?;
    if direction == Direction::Backward {
        events.reverse();
    }
    let events = within_bytes(events);
    let end = cursor.min(stream.next_event_seq);
    let (forward, backward) = match (events.first(), events.last()) {
        (Some(first), Some(last)) => (last.seq + 1, first.seq),
        // At the end of the stream the tokens stay where they were, so a client loop that
        // waits for a repeated token ends.
        _ => (end, end),
    };
    let rendered: Vec<Value> = events
        .iter()
        .map(|e| json!({ "timestamp": e.timestamp_ms, "message": e.message, "ingestionTime": e.ingestion_ms }))
        .collect();
    Ok(json!({
        "events": rendered,
        "nextForwardToken": format!("f/{forward}"),
        "nextBackwardToken": format!("b/{backward}"),
    }))
}

/// CloudWatch's plain term patterns: every term must appear; `?term` terms are alternatives
/// (at least one must appear); `-term` must not appear; "quoted phrases" are one term.
struct Pattern {
    all: Vec<String>,
    any: Vec<String>,
    none: Vec<String>,
}

impl Pattern {
    fn parse(p: &str) -> Result<Pattern, ApiError> {
        let p = p.trim();
        if p.starts_with('{') || p.starts_with('[') {
            return Err(ApiError::logs_invalid(
                "JSON and space-delimited filter patterns are not supported by Barge; use terms, \"phrases\", ?alternatives and -exclusions",
            ));
        }
        let mut terms = Vec::new();
        let mut chars = p.chars().peekable();
        while let Some(c) = chars.peek().copied() {
            if c.is_whitespace() {
                chars.next();
                continue;
            }
            let mut prefix = String::new();
            if c == '?' || c == '-' {
                prefix.push(c);
                chars.next();
            }
            let mut term = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                for c in chars.by_ref() {
                    if c == '"' {
                        break;
                    }
                    term.push(c);
                }
            } else {
                while let Some(c) = chars.peek().copied() {
                    if c.is_whitespace() {
                        break;
                    }
                    term.push(c);
                    chars.next();
                }
            }
            terms.push((prefix, term));
        }
        let mut pattern = Pattern {
            all: Vec::new(),
            any: Vec::new(),
            none: Vec::new(),
        };
        for (prefix, term) in terms {
            match prefix.as_str() {
                "?" => pattern.any.push(term),
                "-" => pattern.none.push(term),
                _ => pattern.all.push(term),
            }
        }
        Ok(pattern)
    }

    fn keeps(&self, message: &str) -> bool {
        self.all.iter().all(|t| message.contains(t.as_str()))
            && (self.any.is_empty() || self.any.iter().any(|t| message.contains(t.as_str())))
            && !self.none.iter().any(|t| message.contains(t.as_str()))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FilterLogEventsInput {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_names: Option<Vec<String>>,
    log_stream_name_prefix: Option<String>,
    start_time: Option<i64>,
    end_time: Option<i64>,
    filter_pattern: Option<String>,
    next_token: Option<String>,
    limit: Option<i64>,
}

fn filter_log_events(state: &State, reader: &LogReader, body: &[u8]) -> Result<Value, ApiError> {
    let i: FilterLogEventsInput = parse(body).map_err(|e| ApiError::logs_invalid(e.message))?;
    check_group(state, &i.log_group_name, &i.log_group_identifier)?;
    if i.log_stream_names.is_some() && i.log_stream_name_prefix.is_some() {
        return Err(ApiError::logs_invalid(
            "Give logStreamNames or logStreamNamePrefix, not both",
        ));
    }
    let limit = limit(i.limit, LOG_EVENTS_PAGE_MAX)?;
    let pattern = Pattern::parse(i.filter_pattern.as_deref().unwrap_or(""))?;
    let streams: Vec<&LogStream> = match (&i.log_stream_names, &i.log_stream_name_prefix) {
        (Some(names), _) => names
            .iter()
            .filter_map(|n| state.log_streams.get(n))
            .map(|s| &**s)
            .collect(),
        (None, Some(prefix)) => state
            .log_streams
            .range(prefix.clone()..)
            .take_while(|(n, _)| n.starts_with(prefix.as_str()))
            .map(|(_, s)| &**s)
            .collect(),
        (None, None) => state.log_streams.values().map(|s| &**s).collect(),
    };
    let after = match i.next_token.as_deref() {
        None => None,
        Some(t) => {
            let bad = || {
                ApiError::logs_invalid(format!(
                    "nextToken {t:?} is not a token this operation returned"
                ))
            };
            let parts: Vec<&str> = t.split(':').collect();
            let [ts, stream, seq] = parts.as_slice() else {
                return Err(bad());
            };
            Some((
                ts.parse().map_err(|_| bad())?,
                stream.parse().map_err(|_| bad())?,
                seq.parse().map_err(|_| bad())?,
            ))
        }
    };
    let numbers: Vec<u64> = streams.iter().map(|s| s.number).collect();
    let names: std::collections::HashMap<u64, &str> = streams
        .iter()
        .map(|s| (s.number, s.name.as_str()))
        .collect();
    let (events, last, exhausted) = reader
        .filter_events(
            &numbers,
            after,
            i.start_time,
            i.end_time,
            limit,
            FILTER_SCAN_ROWS_MAX,
            &|m| pattern.keeps(m),
        )
        .map_err(|e| ApiError::server(e.to_string()))?;
    let found = events.len();
    let kept = within_bytes(events);
    // More may follow when the scan stopped early or the byte budget cut the page.
    let resume = if !exhausted || kept.len() < found {
        kept.last()
            .map(|e| (e.timestamp_ms, e.stream, e.seq))
            .or(last)
    } else {
        None
    };
    let rendered: Vec<Value> = kept
        .iter()
        .map(|e| {
            json!({
                "logStreamName": names.get(&e.stream).copied().unwrap_or(""),
                "timestamp": e.timestamp_ms,
                "message": e.message,
                "ingestionTime": e.ingestion_ms,
                "eventId": event_id(e),
            })
        })
        .collect();
    let searched: Vec<Value> = streams
        .iter()
        .map(|s| json!({ "logStreamName": s.name, "searchedCompletely": exhausted }))
        .collect();
    Ok(compact(json!({
        "events": rendered,
        "searchedLogStreams": searched,
        "nextToken": resume.map(|(t, s, q)| format!("{t}:{s}:{q}")),
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeLogStreamsInput {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_name_prefix: Option<String>,
    order_by: Option<String>,
    descending: Option<bool>,
    next_token: Option<String>,
    limit: Option<i64>,
}

fn render_stream(state: &State, s: &LogStream) -> Value {
    compact(json!({
        "logStreamName": s.name,
        "creationTime": s.created_at,
        "firstEventTimestamp": s.first_event_at,
        "lastEventTimestamp": s.last_event_at,
        "lastIngestionTime": s.last_ingestion_at,
        "uploadSequenceToken": "1",
        "arn": format!("{}:log-stream:{}", group_arn(state), s.name),
        "storedBytes": 0,
    }))
}

fn describe_log_streams(state: &State, body: &[u8]) -> Result<Value, ApiError> {
    let i: DescribeLogStreamsInput = parse(body).map_err(|e| ApiError::logs_invalid(e.message))?;
    check_group(state, &i.log_group_name, &i.log_group_identifier)?;
    let limit = limit(i.limit, LOG_DESCRIBE_PAGE_MAX)?;
    let by_time = match i.order_by.as_deref() {
        None | Some("LogStreamName") => false,
        Some("LastEventTime") => true,
        Some(o) => {
            return Err(ApiError::logs_invalid(format!(
                "orderBy {o:?} is not one of LogStreamName, LastEventTime"
            )))
        }
    };
    if by_time && i.log_stream_name_prefix.is_some() {
        return Err(ApiError::logs_invalid(
            "logStreamNamePrefix cannot be used with orderBy LastEventTime",
        ));
    }
    let prefix = i.log_stream_name_prefix.unwrap_or_default();
    let mut streams: Vec<&LogStream> = state
        .log_streams
        .range(prefix.clone()..)
        .take_while(|(n, _)| n.starts_with(prefix.as_str()))
        .map(|(_, s)| &**s)
        .collect();
    if by_time {
        streams.sort_by_key(|s| (s.last_event_at.unwrap_or(s.created_at), s.name.clone()));
    }
    if i.descending.unwrap_or(false) {
        streams.reverse();
    }
    // The token is the offset of the next page in this order.
    let offset: usize = match &i.next_token {
        Some(t) => t.parse().map_err(|_| {
            ApiError::logs_invalid("nextToken is not a token this operation returned")
        })?,
        None => 0,
    };
    let page: Vec<Value> = streams
        .iter()
        .skip(offset)
        .take(limit)
        .map(|s| render_stream(state, s))
        .collect();
    let next = (offset + limit < streams.len()).then(|| (offset + limit).to_string());
    Ok(compact(json!({ "logStreams": page, "nextToken": next })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeLogGroupsInput {
    log_group_name_prefix: Option<String>,
    log_group_name_pattern: Option<String>,
    log_group_identifiers: Option<Vec<String>>,
    limit: Option<i64>,
}

fn describe_log_groups(state: &State, body: &[u8]) -> Result<Value, ApiError> {
    let i: DescribeLogGroupsInput = parse(body).map_err(|e| ApiError::logs_invalid(e.message))?;
    if i.log_group_name_prefix.is_some() && i.log_group_name_pattern.is_some() {
        return Err(ApiError::logs_invalid(
            "Give logGroupNamePrefix or logGroupNamePattern, not both",
        ));
    }
    limit(i.limit, LOG_DESCRIBE_PAGE_MAX)?;
    let arn = group_arn(state);
    let matches = i
        .log_group_name_prefix
        .as_ref()
        .is_none_or(|p| LOG_GROUP_NAME.starts_with(p.as_str()))
        && i.log_group_name_pattern
            .as_ref()
            .is_none_or(|p| LOG_GROUP_NAME.contains(p.as_str()))
        && i.log_group_identifiers.as_ref().is_none_or(|ids| {
            ids.iter()
                .any(|id| id == LOG_GROUP_NAME || *id == arn || *id == format!("{arn}:*"))
        });
    let created = state
        .log_streams
        .values()
        .map(|s| s.created_at)
        .min()
        .unwrap_or(0);
    let stored: u64 = state.log_streams.values().map(|s| s.stored_bytes).sum();
    let groups = if matches {
        vec![json!({
            "logGroupName": LOG_GROUP_NAME,
            "creationTime": created,
            "metricFilterCount": 0,
            "arn": format!("{arn}:*"),
            "logGroupArn": arn,
            "storedBytes": stored,
            "logGroupClass": "STANDARD",
        })]
    } else {
        Vec::new()
    };
    Ok(json!({ "logGroups": groups }))
}
