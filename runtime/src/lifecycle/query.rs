//! Listing sandboxes: filters by state and metadata, a stable order, and an opaque cursor.
//!
//! The order is by creation time, then by a per-manager sequence number: both are fixed for the life of a
//! sandbox, so a cursor ("everything after this key") stays correct while sandboxes are created, resumed
//! and killed between pages — no duplicates, and no skips of sandboxes that existed throughout. (Ordering
//! by the latest start would move a sandbox resumed between two pages.)

use std::collections::BTreeMap;

use super::record::{SandboxRecord, SandboxState};

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

pub(crate) fn key(record: &SandboxRecord) -> Key {
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

/// Whether a record passes the query's filters.
pub(crate) fn matches(query: &ListQuery, record: &SandboxRecord) -> bool {
    let state_ok = if query.states.is_empty() {
        matches!(record.state, SandboxState::Running | SandboxState::Paused)
    } else {
        query.states.contains(&record.state)
            // A sandbox in transition is listed under the state it is heading from.
            || (record.state == SandboxState::Pausing && query.states.contains(&SandboxState::Running))
            || (record.state == SandboxState::Resuming && query.states.contains(&SandboxState::Paused))
    };
    state_ok
        && query
            .owner
            .as_ref()
            .is_none_or(|owner| record.owner.as_ref() == Some(owner))
        && query
            .metadata
            .iter()
            .all(|(k, v)| record.metadata.get(k) == Some(v))
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
