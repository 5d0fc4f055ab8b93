//! A sandbox's own log, as E2B serves it: `GET /v2/sandboxes/{id}/logs` (structured entries, a cursor
//! in milliseconds, a direction, a minimum level and a search string) and the older
//! `GET /sandboxes/{id}/logs` (lines and entries from `start`). The events are the lifecycle's
//! ([`stasis::lifecycle::events`]): created, paused, resumed, timed out, snapshots, commands started and
//! ended.

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::{Extension, Json};
use serde::Serialize;
use stasis::lifecycle::{Event, Level};
use utoipa::ToSchema;

use super::PathId;
use crate::auth::{Caller, owned_sandbox};
use crate::error::{ApiError, ErrorJson};
use crate::state::AppState;
use crate::time::rfc3339;

/// Most entries one request returns, and the default.
pub const MAX_LIMIT: usize = 1000;

/// The order of `GET /v2/sandboxes/{id}/logs` (for the document; the query is read as text).
#[derive(Debug, Clone, Copy, ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Direction {
    /// Oldest first, from the cursor on.
    Forward,
    /// Newest first, from the cursor back.
    Backward,
}

/// The least level shown (for the document).
#[derive(Debug, Clone, Copy, ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum LeastLevel {
    /// Everything.
    Debug,
    /// Info and above.
    Info,
    /// Warnings and errors.
    Warn,
    /// Errors.
    Error,
}

/// One entry, as E2B's `SandboxLogEntry`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogEntryJson {
    /// When it happened (RFC 3339).
    pub timestamp: String,
    /// What happened.
    pub message: String,
    /// `debug`, `info`, `warn` or `error`.
    #[schema(value_type = String)]
    pub level: &'static str,
    /// What happened, as fields: `event` names the kind.
    pub fields: BTreeMap<String, String>,
}

/// `{"logs": [entry]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogsV2Json {
    /// The entries.
    pub logs: Vec<LogEntryJson>,
}

/// One line of the older shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogLineJson {
    /// When it happened (RFC 3339).
    pub timestamp: String,
    /// The entry as a line of text.
    pub line: String,
}

/// `{"logs": [line], "logEntries": [entry]}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogsJson {
    /// The entries as lines.
    pub logs: Vec<LogLineJson>,
    /// The entries.
    pub log_entries: Vec<LogEntryJson>,
}

fn entry(event: &Event) -> LogEntryJson {
    LogEntryJson {
        timestamp: rfc3339(stasis::lifecycle::record::from_ms(event.timestamp_ms)),
        message: event.message.clone(),
        level: event.level.as_str(),
        fields: event.fields.clone(),
    }
}

fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))
}

fn number(name: &str, value: &str) -> Result<u64, ApiError> {
    value
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{name} must be a whole number, not {value:?}")))
}

fn limit(value: &str) -> Result<usize, ApiError> {
    value
        .parse::<usize>()
        .ok()
        .filter(|l| (1..=MAX_LIMIT).contains(l))
        .ok_or_else(|| {
            ApiError::bad_request(format!("limit must be 1 to {MAX_LIMIT}, not {value:?}"))
        })
}

async fn events(state: &AppState, caller: &Caller, id: &str) -> Result<Vec<Event>, ApiError> {
    owned_sandbox(state, caller, id)?;
    let manager = state.manager().clone();
    let id = id.to_owned();
    Ok(super::blocking(move || manager.events(&id)).await??)
}

/// `GET /v2/sandboxes/{id}/logs?cursor=&limit=&direction=&level=&search=`: `forward` (the default) gives
/// the entries at or after `cursor` (ms since the epoch, default 0) oldest first, `backward` those at or
/// before it (default now) newest first; `level` is the least level shown, `search` a substring of the
/// message.
#[utoipa::path(get, path = "/v2/sandboxes/{id}/logs", tag = "sandboxes", operation_id = "sandbox_logs_v2",
    params(("id" = String, Path, description = "The sandbox id"),
        ("cursor" = Option<u64>, Query, description = "Milliseconds since the epoch to start from"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Most entries, 1 to 1000 (default 1000)"),
        ("direction" = Option<Direction>, Query, description = "`forward` (default) or `backward`"),
        ("level" = Option<LeastLevel>, Query, description = "Least level: debug, info, warn, error"),
        ("search" = Option<String>, Query, description = "A substring of the message")),
    responses((status = 200, description = "The entries", body = LogsV2Json),
        (status = 400, description = "Malformed id or query", body = ErrorJson),
        (status = 404, description = "No such sandbox", body = ErrorJson),
        (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn logs_v2(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
    RawQuery(query): RawQuery,
) -> Result<Json<LogsV2Json>, ApiError> {
    let (mut cursor, mut max, mut backward, mut least, mut search) =
        (None, MAX_LIMIT, false, Level::Debug, None);
    for (key, value) in query_pairs(query.as_deref())? {
        match key.as_str() {
            "cursor" => cursor = Some(number("cursor", &value)?),
            "limit" => max = limit(&value)?,
            "direction" => {
                backward = match value.as_str() {
                    "forward" => false,
                    "backward" => true,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "direction is forward or backward, not {other:?}"
                        )));
                    }
                }
            }
            "level" => {
                least = match value.as_str() {
                    "debug" => Level::Debug,
                    "info" => Level::Info,
                    "warn" => Level::Warn,
                    "error" => Level::Error,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "level is debug, info, warn or error, not {other:?}"
                        )));
                    }
                }
            }
            "search" => search = Some(value),
            _ => {}
        }
    }
    let mut events: Vec<Event> = events(&state, &caller, &id)
        .await?
        .into_iter()
        .filter(|e| e.level >= least)
        .filter(|e| {
            search
                .as_ref()
                .is_none_or(|s| e.message.contains(s.as_str()))
        })
        .filter(|e| match (cursor, backward) {
            (Some(c), false) => e.timestamp_ms >= c,
            (Some(c), true) => e.timestamp_ms <= c,
            (None, _) => true,
        })
        .collect();
    if backward {
        events.reverse();
    }
    events.truncate(max);
    Ok(Json(LogsV2Json {
        logs: events.iter().map(entry).collect(),
    }))
}

/// `GET /sandboxes/{id}/logs?start=&limit=`: the entries at or after `start` (ms since the epoch),
/// oldest first, as lines and as entries.
#[utoipa::path(get, path = "/sandboxes/{id}/logs", tag = "sandboxes", operation_id = "sandbox_logs",
    params(("id" = String, Path, description = "The sandbox id"),
        ("start" = Option<u64>, Query, description = "Milliseconds since the epoch to start from"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Most entries, 1 to 1000 (default 1000)")),
    responses((status = 200, description = "The entries", body = LogsJson),
        (status = 400, description = "Malformed id or query", body = ErrorJson),
        (status = 404, description = "No such sandbox", body = ErrorJson),
        (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn logs(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
    RawQuery(query): RawQuery,
) -> Result<Json<LogsJson>, ApiError> {
    let (mut start, mut max) = (0, MAX_LIMIT);
    for (key, value) in query_pairs(query.as_deref())? {
        match key.as_str() {
            "start" => start = number("start", &value)?,
            "limit" => max = limit(&value)?,
            _ => {}
        }
    }
    let mut events = events(&state, &caller, &id).await?;
    events.retain(|e| e.timestamp_ms >= start);
    events.truncate(max);
    Ok(Json(LogsJson {
        logs: events
            .iter()
            .map(|e| LogLineJson {
                timestamp: rfc3339(stasis::lifecycle::record::from_ms(e.timestamp_ms)),
                line: format!("[{}] {}", e.level.as_str(), e.message),
            })
            .collect(),
        log_entries: events.iter().map(entry).collect(),
    }))
}
