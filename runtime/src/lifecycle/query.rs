//! Listing sandboxes: filters by state and metadata, a stable order, and an opaque cursor.
//!
//! The order is by creation time, then by a per-manager sequence number: both are fixed for the life of a
//! sandbox, so a cursor ("everything after this key") stays correct while sandboxes are created, resumed
//! and killed between pages — no duplicates, and no skips of sandboxes that existed throughout. (Ordering
//! by the latest start would move a sandbox resumed between two pages.)

use std::collections::BTreeMap;

use super::record::SandboxState;

/// The largest page.
pub const MAX_LIMIT: u32 = 100;

/// What to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// States to include; running and paused when empty.
    pub states: Vec<SandboxState>,
    /// Metadata pairs that must all match.
    pub metadata: BTreeMap<String, String>,
    /// Page size, 1 to 100; 100 when `None`.
    pub limit: Option<u32>,
    /// The cursor returned with the previous page.
    pub next_token: Option<String>,
    /// Only sandboxes of this owner when set (see [`SandboxRecord::owner`]); every sandbox when `None`.
    pub owner: Option<String>,
}

/// Why a list query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The limit is outside 1..=100.
    #[error("limit must be between 1 and {MAX_LIMIT}, got {0}")]
    Limit(u32),
    /// The cursor was not made by this server.
    #[error("the next token is not valid")]
    Token,
}

/// The sort key of a record; a cursor is the key of the last item of a page.
pub(crate) type Key = (u64, u64);

/// The key of `record` (the index keeps it in its ordered sets; the tests compare against it).
#[cfg(test)]
pub(crate) fn key(record: &super::record::SandboxRecord) -> Key {
    (record.created_at_ms, record.sequence)
}

/// Encodes a key as an opaque token.
pub(crate) fn encode_token(key: Key) -> String {
    hex::encode([key.0.to_be_bytes(), key.1.to_be_bytes()].concat())
}

/// Decodes a token made by [`encode_token`].
pub(crate) fn decode_token(token: &str) -> Result<Key, QueryError> {
    let bytes = hex::decode(token).map_err(|_| QueryError::Token)?;
    let bytes: [u8; 16] = bytes.try_into().map_err(|_| QueryError::Token)?;
    let (a, b) = bytes.split_at(8);
    Ok((
        u64::from_be_bytes(a.try_into().map_err(|_| QueryError::Token)?),
        u64::from_be_bytes(b.try_into().map_err(|_| QueryError::Token)?),
    ))
}

/// Whether a sandbox in `state` passes the query's state filter: running and paused when it lists no
/// state; a sandbox in transition is listed under the state it is heading from.
pub(crate) fn state_matches(query: &ListQuery, state: SandboxState) -> bool {
    if query.states.is_empty() {
        matches!(state, SandboxState::Running | SandboxState::Paused)
    } else {
        query.states.contains(&state)
            || (state == SandboxState::Pausing && query.states.contains(&SandboxState::Running))
            || (state == SandboxState::Resuming && query.states.contains(&SandboxState::Paused))
    }
}

/// Every state a sandbox listed by `query` can be in (what [`state_matches`] accepts), each once.
pub(crate) fn listed_states(query: &ListQuery) -> Vec<SandboxState> {
    [
        SandboxState::Running,
        SandboxState::Pausing,
        SandboxState::Paused,
        SandboxState::Resuming,
        SandboxState::Lost,
    ]
    .into_iter()
    .filter(|&state| state_matches(query, state))
    .collect()
}

/// The effective page size.
pub(crate) fn limit(query: &ListQuery) -> Result<usize, QueryError> {
    match query.limit {
        None => Ok(MAX_LIMIT as usize),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n as usize),
        Some(n) => Err(QueryError::Limit(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_junk_is_refused() {
        let key = (1_700_000_000_000, 42);
        assert_eq!(decode_token(&encode_token(key)), Ok(key));
        for junk in ["", "zz", "00", &"0".repeat(34)] {
            assert_eq!(decode_token(junk), Err(QueryError::Token), "{junk:?}");
        }
    }
}
