//! What both backends share: the stored form of the state (`barge_core::stored`, also used by
//! the simulator's model of the store), with this crate's error, and the log queries' paging.

use barge_core::State;

use crate::{EventPage, StoreError, StoredEvent};

pub(crate) use barge_core::stored::entity_row;

/// Puts one stored row into `state`. The caller runs `rebuild_indexes` once all are in.
pub(crate) fn put_entity(
    state: &mut State,
    kind: &str,
    key: &str,
    body: &[u8],
) -> Result<(), StoreError> {
    barge_core::stored::put_entity(state, kind, body).map_err(|source| StoreError::Corrupt {
        kind: kind.to_string(),
        key: key.to_string(),
        source,
    })
}

/// The bound parameters of `filter_events`' resume condition `(timestamp, stream, seq) > (a,
/// b, c)`. Without a position the tuple sorts before every row (seq -1 is below any stored
/// seq), so both backends bind exactly the same values.
pub(crate) fn filter_after(after: Option<(i64, u64, u64)>) -> (i64, i64, i64) {
    match after {
        Some((ts, stream, seq)) => (ts, stream as i64, seq as i64),
        None => (i64::MIN, 0, -1),
    }
}

/// `filter_events`' page from rows already in (timestamp, stream, seq) order, at most
/// `scan_max` of them: the kept events up to `limit`, the position of the last row examined,
/// and whether the scan reached the end of the matching rows.
pub(crate) fn filter_page(
    rows: impl Iterator<Item = Result<StoredEvent, StoreError>>,
    limit: usize,
    scan_max: usize,
    keep: &dyn Fn(&str) -> bool,
) -> Result<EventPage, StoreError> {
    let mut out = Vec::new();
    let mut last = None;
    let mut scanned = 0;
    for row in rows {
        let e = row?;
        scanned += 1;
        last = Some((e.timestamp_ms, e.stream, e.seq));
        if keep(&e.message) {
            out.push(e);
            if out.len() >= limit {
                break;
            }
        }
    }
    let exhausted = out.len() < limit && scanned < scan_max;
    Ok((out, last, exhausted))
}
