//! Sandbox metrics as the SDKs read them: `GET /sandboxes/{id}/metrics?start=&end=` (the samples of one
//! sandbox over its life, unix-second bounds) and `GET /sandboxes/metrics?sandbox_ids=a,b` (the newest
//! sample of each). The samples are taken by [`crate::sampler`].

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;

use super::PathId;
use crate::auth::{Caller, owned_sandbox};
use crate::error::{ApiError, ErrorJson};
use crate::sampler::Sample;
use crate::state::AppState;
use crate::time::rfc3339;

/// Most sandboxes one bulk request asks about.
pub const MAX_BULK_IDS: usize = 100;

/// One sample, as E2B's `SandboxMetric`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricJson {
    /// When it was taken (RFC 3339).
    pub timestamp: String,
    /// When it was taken (unix seconds).
    pub timestamp_unix: u64,
    /// Virtual CPUs (one).
    pub cpu_count: u32,
    /// CPU used since the previous sample, in percent.
    pub cpu_used_pct: f64,
    /// Bytes of linear memory of its processes.
    pub mem_used: u64,
    /// Its memory limit in bytes.
    pub mem_total: u64,
    /// Page cache: none is attributed to a sandbox, so always 0.
    pub mem_cache: u64,
    /// Bytes of its files.
    pub disk_used: u64,
    /// Its disk quota in bytes.
    pub disk_total: u64,
}

impl MetricJson {
    fn new(state: &AppState, sample: &Sample) -> Self {
        let limits = &state.manager().runtime().config().limits;
        Self {
            timestamp: rfc3339(stasis::lifecycle::record::from_ms(sample.timestamp_ms)),
            timestamp_unix: sample.timestamp_ms / 1000,
            cpu_count: 1,
            cpu_used_pct: (sample.cpu_used_pct * 100.0).round() / 100.0,
            mem_used: sample.mem_used,
            mem_total: limits.max_memory_bytes,
            mem_cache: 0,
            disk_used: sample.disk_used,
            disk_total: limits.max_disk_bytes,
        }
    }
}

/// `{"sandboxes": {id: newest sample}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkMetricsJson {
    /// Each asked-about sandbox that has a sample, by id.
    pub sandboxes: BTreeMap<String, MetricJson>,
}

/// Parses a whole number of unix seconds.
fn seconds(name: &str, value: &str) -> Result<u64, ApiError> {
    value
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{name} must be unix seconds, not {value:?}")))
}

/// `GET /sandboxes/{id}/metrics?start=&end=`: the sandbox's samples between `start` and `end` (unix
/// seconds, both optional; a window that ends before it starts holds none), oldest first. A paused
/// sandbox answers the samples of its running times.
#[utoipa::path(get, path = "/sandboxes/{id}/metrics", tag = "sandboxes", operation_id = "sandbox_metrics",
    params(("id" = String, Path, description = "The sandbox id"),
        ("start" = Option<u64>, Query, description = "Unix seconds: no sample before"),
        ("end" = Option<u64>, Query, description = "Unix seconds: no sample after")),
    responses((status = 200, description = "Its samples, oldest first", body = [MetricJson]),
        (status = 400, description = "Malformed id or query", body = ErrorJson),
        (status = 404, description = "No such sandbox", body = ErrorJson),
        (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn sandbox_metrics(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<MetricJson>>, ApiError> {
    owned_sandbox(&state, &caller, &id)?;
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
    let (mut start, mut end) = (0u64, u64::MAX);
    for (key, value) in pairs {
        match key.as_str() {
            "start" => start = seconds("start", &value)?,
            "end" => end = seconds("end", &value)?,
            _ => {}
        }
    }
    let samples = state.samples().series(&id);
    Ok(Json(
        samples
            .iter()
            .filter(|s| (start..=end).contains(&(s.timestamp_ms / 1000)))
            .map(|s| MetricJson::new(&state, s))
            .collect(),
    ))
}

/// `GET /sandboxes/metrics?sandbox_ids=a,b`: the newest sample of each of the caller's sandboxes named
/// (at most 100); sandboxes that are unknown, another key's or not sampled yet are left out.
#[utoipa::path(get, path = "/sandboxes/metrics", tag = "sandboxes", operation_id = "bulk_metrics",
    params(("sandbox_ids" = String, Query, pattern = "^[A-Za-z0-9_]{1,64}(,[A-Za-z0-9_]{1,64}){0,99}$",
        description = "Comma-separated sandbox ids, 1 to 100")),
    responses((status = 200, description = "The newest sample of each", body = BulkMetricsJson),
        (status = 400, description = "No ids, or too many", body = ErrorJson),
        (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn bulk_metrics(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Json<BulkMetricsJson>, ApiError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
    let ids: Vec<String> = pairs
        .into_iter()
        .filter(|(key, _)| key == "sandbox_ids" || key == "sandboxIds")
        .flat_map(|(_, value)| {
            value
                .split(',')
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    if ids.is_empty() {
        return Err(ApiError::bad_request(
            "sandbox_ids (comma-separated sandbox ids) is required",
        ));
    }
    if let Some(bad) = ids
        .iter()
        .find(|id| id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    {
        return Err(ApiError::bad_request(format!(
            "{:?} is not a sandbox id",
            bad.chars().take(80).collect::<String>()
        )));
    }
    if ids.len() > MAX_BULK_IDS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_BULK_IDS} sandbox ids, not {}",
            ids.len()
        )));
    }
    let sandboxes = ids
        .into_iter()
        .filter(|id| owned_sandbox(&state, &caller, id).is_ok())
        .filter_map(|id| {
            let sample = state.samples().latest(&id)?;
            Some((id, MetricJson::new(&state, &sample)))
        })
        .collect();
    Ok(Json(BulkMetricsJson { sandboxes }))
}
