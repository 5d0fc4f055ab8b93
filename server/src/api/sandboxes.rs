//! The control plane (sdk-compat.md §2): create, list, info, kill, pause, connect, timeout, snapshots and
//! forks, with the response shapes the E2B and Novita SDKs parse. Every handler sees only the calling
//! key's sandboxes and snapshots (see [`crate::auth`]): another key's are 404, as unknown ones.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use stasis::lifecycle::{
    CreateRequest, LifecyclePolicy, ListQuery, OnTimeout, SandboxInfo, SandboxState, SnapshotInfo,
};
use utoipa::ToSchema;

use super::{PathId, blocking, json_body, whole_number};
use crate::auth::{Caller, owned_sandbox, owned_snapshot};
use crate::error::{ApiError, ErrorJson};
use crate::state::AppState;
use crate::time::rfc3339;

/// The envd version reported: 0.5.7 and later accept `application/octet-stream` uploads to `/files`,
/// which this server does.
pub const ENVD_VERSION: &str = "0.5.7";
/// The client id reported for every sandbox (one local "client").
pub const CLIENT_ID: &str = "stasis";
/// The template of a sandbox created without one.
pub const DEFAULT_TEMPLATE: &str = "base";

/// A sandbox as the SDKs read it (create, connect, info and list responses share the shape).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxJson {
    /// The template's name.
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// The sandbox's id.
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    /// Always [`CLIENT_ID`].
    #[serde(rename = "clientID")]
    #[schema(value_type = String)]
    pub client_id: &'static str,
    /// Always [`ENVD_VERSION`].
    #[schema(value_type = String)]
    pub envd_version: &'static str,
    /// The token envd calls must carry; absent from list items.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envd_access_token: Option<String>,
    /// The token the code-interpreter SDKs send on their context calls (the access token again); absent
    /// from list items.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_access_token: Option<String>,
    /// No custom domain: the SDKs then use their configured sandbox URL.
    pub domain: Option<String>,
    /// When it last started running.
    pub started_at: String,
    /// When its timeout applies.
    pub end_at: String,
    /// Virtual CPUs (a sandbox's commands run on one thread).
    pub cpu_count: u32,
    /// Its memory limit in MiB.
    #[serde(rename = "memoryMB")]
    pub memory_mb: u64,
    /// Its disk quota in MiB.
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u64,
    /// `running`, `paused` (or `lost` after a crash).
    #[schema(value_type = String)]
    pub state: &'static str,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
}

impl SandboxJson {
    pub(crate) fn new(state: &AppState, info: &SandboxInfo, with_token: bool) -> Self {
        let limits = &state.manager().runtime().config().limits;
        Self {
            template_id: info.template.clone(),
            sandbox_id: info.id.clone(),
            client_id: CLIENT_ID,
            envd_version: ENVD_VERSION,
            envd_access_token: with_token.then(|| state.access_token(&info.id)),
            traffic_access_token: with_token.then(|| state.access_token(&info.id)),
            domain: None,
            started_at: rfc3339(info.started_at),
            end_at: rfc3339(info.end_at),
            cpu_count: 1,
            memory_mb: limits.max_memory_bytes >> 20,
            disk_size_mb: limits.max_disk_bytes >> 20,
            state: info.state.as_str(),
            metadata: info.metadata.clone(),
        }
    }
}

/// Body of `POST /sandboxes`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewSandbox {
    /// Template name or snapshot id; [`DEFAULT_TEMPLATE`] when absent.
    #[serde(rename = "templateID")]
    pub template_id: Option<String>,
    /// Seconds until the timeout applies (a whole number; `300.0` counts as `300`).
    #[serde(default, deserialize_with = "whole_number")]
    pub timeout: Option<u64>,
    /// User metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Environment variables of every command.
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
    /// Pause instead of kill at the timeout.
    pub auto_pause: Option<bool>,
    /// `{"enabled": bool}` or a bool: resume on activity while paused.
    pub auto_resume: Option<Toggle>,
    /// `{"onTimeout": "pause"|"kill", "autoResume": …}` (snake_case accepted too).
    #[schema(value_type = Option<Object>)]
    pub lifecycle: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A setting the SDK families spell either as a bool or as `{"enabled": bool}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Toggle {
    /// `true` or `false`.
    Flag(bool),
    /// `{"enabled": bool}`.
    Object(Enabled),
}

/// `{"enabled": bool}`; other fields are ignored, and no `enabled` means off.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Enabled {
    /// Whether the setting is on.
    pub enabled: Option<bool>,
}

impl Toggle {
    /// Whether the setting is on.
    fn enabled(&self) -> bool {
        match self {
            Self::Flag(on) => *on,
            Self::Object(Enabled { enabled }) => enabled.unwrap_or(false),
        }
    }
}

/// A lenient reading of an `enabled` value inside `lifecycle` (a bool, or `{"enabled": bool}`).
fn enabled(value: Option<&serde_json::Value>) -> bool {
    value.is_some_and(|v| {
        v.as_bool()
            .or_else(|| v.get("enabled").and_then(serde_json::Value::as_bool))
            .unwrap_or(false)
    })
}

/// Body of `connect`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct TimeoutBody {
    /// Seconds from now until the timeout applies; extends a running sandbox's end time only.
    #[serde(default, deserialize_with = "whole_number")]
    pub timeout: Option<u64>,
}

/// Body of `POST /sandboxes/{id}/timeout`, where the timeout is required.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SetTimeoutBody {
    /// Seconds from now until the timeout applies.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(value_type = u64, required = true)]
    pub timeout: Option<u64>,
}

/// Body of `POST /sandboxes/{id}/snapshots`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct NewSnapshot {
    /// An optional name.
    pub name: Option<String>,
}

/// Body of `POST /sandboxes/{id}/fork`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForkBody {
    /// How many sandboxes (default 1).
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 1, maximum = 100)]
    pub count: Option<u64>,
    /// Seconds until each new sandbox's timeout applies.
    #[serde(default, deserialize_with = "whole_number")]
    pub timeout: Option<u64>,
    /// Metadata of the new sandboxes.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A snapshot as reported.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotJson {
    /// Its id (usable as a `templateID` to create from it).
    #[serde(rename = "snapshotID")]
    pub snapshot_id: String,
    /// Its name, if given.
    pub name: Option<String>,
    /// The sandbox it was taken from.
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    /// That sandbox's template.
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// That sandbox's metadata.
    pub metadata: BTreeMap<String, String>,
    /// When it was taken.
    pub created_at: String,
    /// Size of its blob in bytes.
    pub size_bytes: u64,
}

impl From<SnapshotInfo> for SnapshotJson {
    fn from(info: SnapshotInfo) -> Self {
        Self {
            snapshot_id: info.id,
            name: info.name,
            sandbox_id: info.source_sandbox,
            template_id: info.template,
            metadata: info.metadata,
            created_at: rfc3339(stasis::lifecycle::record::from_ms(info.created_at_ms)),
            size_bytes: info.size_bytes,
        }
    }
}

/// The lifecycle policy a create request asks for: `autoPause`, `autoResume` and `lifecycle` as the two
/// SDK families spell them, read leniently because their shapes differ between SDK versions.
fn policy(body: &NewSandbox) -> LifecyclePolicy {
    let lifecycle = body.lifecycle.as_ref();
    let field =
        |camel: &str, snake: &str| lifecycle.and_then(|l| l.get(camel).or_else(|| l.get(snake)));
    let pause = body.auto_pause.unwrap_or(false)
        || field("onTimeout", "on_timeout").and_then(|v| v.as_str()) == Some("pause")
        || enabled(field("autoPause", "auto_pause"));
    let resume = body.auto_resume.as_ref().is_some_and(Toggle::enabled)
        || enabled(field("autoResume", "auto_resume"));
    LifecyclePolicy {
        on_timeout: if pause {
            OnTimeout::Pause
        } else {
            OnTimeout::Kill
        },
        auto_resume: resume,
        idle_timeout: None,
    }
}

/// `POST /sandboxes`, `POST /v2/sandboxes`: 201 with the new sandbox.
#[utoipa::path(post, path = "/sandboxes", tag = "sandboxes", request_body(content = Option<NewSandbox>, description = "Optional; an empty body is `{}`"),
    responses((status = 201, description = "Created and running", body = SandboxJson),
        (status = 400, description = "Unknown template or malformed body", body = ErrorJson), (status = 401, description = "Missing or wrong API key", body = ErrorJson),
        (status = 404, description = "No such snapshot (a `snap_…` templateID)", body = ErrorJson),
        (status = 429, description = "Too many running sandboxes", body = ErrorJson)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: NewSandbox = json_body(body)?;
    let template = body
        .template_id
        .clone()
        .unwrap_or_else(|| DEFAULT_TEMPLATE.to_owned());
    if template.starts_with(stasis::lifecycle::SNAPSHOT_PREFIX) {
        owned_snapshot(&state, &caller, &template)?;
    }
    let request = CreateRequest {
        template,
        timeout: body.timeout.map(Duration::from_secs),
        lifecycle: policy(&body),
        metadata: body.metadata,
        envs: body.env_vars,
        owner: Some(caller.owner().to_owned()),
    };
    let manager = state.manager().clone();
    let info = blocking(move || manager.create(request)).await??;
    tracing::info!(sandbox = %info.id, template = %info.template, "created");
    Ok((
        StatusCode::CREATED,
        Json(SandboxJson::new(&state, &info, true)),
    )
        .into_response())
}

/// `GET /v2/sandboxes`, `GET /sandboxes`: one page, the cursor in `x-next-token`.
#[utoipa::path(get, path = "/sandboxes", tag = "sandboxes",
    params(("metadata" = Option<String>, Query, description = "URL-encoded `k=v&k2=v2` filter"),
        ("state" = Option<String>, Query, description = "Comma-separated states: running, paused"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size, 1 to 100"),
        ("nextToken" = Option<String>, Query, description = "Cursor from `x-next-token`")),
    responses((status = 200, description = "One page, oldest first; the next cursor in `x-next-token`",
        body = [SandboxJson]), (status = 400, description = "Invalid query", body = ErrorJson), (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut query = list_query(query.as_deref().unwrap_or(""))?;
    query.owner = Some(caller.owner().to_owned());
    let page = state.manager().list(&query)?;
    let items: Vec<SandboxJson> = page
        .items
        .iter()
        .map(|info| SandboxJson::new(&state, info, false))
        .collect();
    let mut response = Json(items).into_response();
    if let Some(token) = page.next_token {
        let value = HeaderValue::from_str(&token).map_err(|e| ApiError::internal(&e))?;
        response.headers_mut().insert("x-next-token", value);
    }
    Ok(response)
}

/// Parses the list query: `metadata` is itself a URL-encoded query string (`k=v&k2=v2`), `state` a
/// comma-separated list, `limit` a page size and `nextToken` a cursor.
pub fn list_query(raw: &str) -> Result<ListQuery, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
    let mut query = ListQuery::default();
    for (name, value) in pairs {
        match name.as_str() {
            "metadata" => {
                let filters: Vec<(String, String)> = serde_urlencoded::from_str(&value)
                    .map_err(|e| ApiError::bad_request(format!("invalid metadata filter: {e}")))?;
                query.metadata.extend(filters);
            }
            "state" => {
                for state in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    query.states.push(match state {
                        "running" => SandboxState::Running,
                        "paused" => SandboxState::Paused,
                        "lost" => SandboxState::Lost,
                        other => {
                            return Err(ApiError::bad_request(format!(
                                "unknown state {other:?} (running, paused)"
                            )));
                        }
                    });
                }
            }
            "limit" => {
                query.limit = Some(value.parse().map_err(|_| {
                    ApiError::bad_request(format!("limit must be a number, got {value:?}"))
                })?);
            }
            "nextToken" | "next_token" => query.next_token = Some(value),
            // Unknown parameters are ignored, as newer SDKs may send more.
            _ => {}
        }
    }
    Ok(query)
}

/// `GET /sandboxes/{id}`.
#[utoipa::path(get, path = "/sandboxes/{id}", tag = "sandboxes", params(("id" = String, Path, description = "The sandbox id")),
    responses((status = 200, description = "The sandbox", body = SandboxJson),
        (status = 400, description = "Malformed id", body = ErrorJson),
        (status = 404, description = "No such sandbox", body = ErrorJson), (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn info(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
) -> Result<Json<SandboxJson>, ApiError> {
    let info = owned_sandbox(&state, &caller, &id)?;
    Ok(Json(SandboxJson::new(&state, &info, true)))
}

/// `DELETE /sandboxes/{id}`: 204, or 404 for an unknown (or already killed) sandbox.
#[utoipa::path(delete, path = "/sandboxes/{id}", tag = "sandboxes", params(("id" = String, Path, description = "The sandbox id")),
    responses((status = 204, description = "Killed; everything stored of it deleted"),
        (status = 400, description = "Malformed id", body = ErrorJson),
        (status = 404, description = "No such sandbox", body = ErrorJson),
        (status = 409, description = "Busy with another operation", body = ErrorJson), (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn kill(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    owned_sandbox(&state, &caller, &id)?;
    let manager = state.manager().clone();
    let target = id.clone();
    blocking(move || manager.kill(&target)).await??;
    tracing::info!(sandbox = %id, "killed");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sandboxes/{id}/pause`: 204, 409 if already paused, 404 if unknown. The body, if any, is ignored
/// (Python sends `{}`, JS nothing).
#[utoipa::path(post, path = "/sandboxes/{id}/pause", tag = "sandboxes", params(("id" = String, Path, description = "The sandbox id")),
    responses((status = 204, description = "Paused to its blob"),
        (status = 400, description = "Malformed id", body = ErrorJson),
        (status = 404, description = "No such sandbox", body = ErrorJson),
        (status = 409, description = "Already paused, lost or busy", body = ErrorJson),
        (status = 429, description = "Too many paused sandboxes", body = ErrorJson),
        (status = 507, description = "Less free disk than the server's floor (`--min-free-disk`): nothing was written, the sandbox keeps running", body = ErrorJson),
        (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn pause(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    owned_sandbox(&state, &caller, &id)?;
    let manager = state.manager().clone();
    let target = id.clone();
    let started = std::time::Instant::now();
    if blocking(move || manager.pause(&target)).await?? {
        let elapsed = started.elapsed();
        // The blob's size is read after the fact: the pause itself does not report it, and a stat is
        // cheap next to the pause. A sandbox resumed in between has no blob; its bytes go uncounted.
        let written = std::fs::metadata(state.blob_path(&id)).map_or(0, |m| m.len());
        state.metrics().observe_pause(elapsed, written);
        tracing::info!(sandbox = %id, elapsed_ms = elapsed.as_millis() as u64, "paused");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("sandbox {id} is already paused"),
        ))
    }
}

/// `POST /sandboxes/{id}/connect` (and `/v2/…`): 201 if it was paused and is resumed, 200 if it was
/// running (its end time extended when `timeout` asks for later).
#[utoipa::path(post, path = "/sandboxes/{id}/connect", tag = "sandboxes", params(("id" = String, Path, description = "The sandbox id")),
    request_body(content = Option<TimeoutBody>, description = "Optional; an empty body is `{}`"),
    responses((status = 200, description = "It was running", body = SandboxJson),
        (status = 201, description = "It was paused and is resumed", body = SandboxJson),
        (status = 400, description = "Malformed id or body, or its template is no longer registered", body = ErrorJson),
        (status = 404, description = "No such sandbox", body = ErrorJson),
        (status = 409, description = "Lost or busy", body = ErrorJson),
        (status = 429, description = "Too many running sandboxes", body = ErrorJson), (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn connect(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    owned_sandbox(&state, &caller, &id)?;
    let body: TimeoutBody = json_body(body)?;
    let manager = state.manager().clone();
    let started = std::time::Instant::now();
    let connected =
        blocking(move || manager.connect(&id, body.timeout.map(Duration::from_secs))).await??;
    let status = if connected.resumed {
        state.metrics().observe_resume(started.elapsed());
        tracing::info!(sandbox = %connected.info.id, elapsed_ms = started.elapsed().as_millis() as u64, "resumed");
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(SandboxJson::new(&state, &connected.info, true)),
    )
        .into_response())
}

/// `POST /sandboxes/{id}/timeout {"timeout": N}`: 204.
#[utoipa::path(post, path = "/sandboxes/{id}/timeout", tag = "sandboxes", params(("id" = String, Path, description = "The sandbox id")),
    request_body = SetTimeoutBody,
    responses((status = 204, description = "End time set to now + timeout"),
        (status = 400, description = "Malformed id or body, or no timeout given", body = ErrorJson),
        (status = 404, description = "No such sandbox", body = ErrorJson),
        (status = 409, description = "Busy with another operation", body = ErrorJson), (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn set_timeout(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    owned_sandbox(&state, &caller, &id)?;
    let body: SetTimeoutBody = json_body(body)?;
    let timeout = body
        .timeout
        .ok_or_else(|| ApiError::bad_request("timeout (seconds) is required"))?;
    let manager = state.manager().clone();
    blocking(move || manager.set_timeout(&id, Duration::from_secs(timeout))).await??;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sandboxes/{id}/snapshots {"name"?}`: 201 with the snapshot.
#[utoipa::path(post, path = "/sandboxes/{id}/snapshots", tag = "snapshots", params(("id" = String, Path, description = "The sandbox id")),
    request_body(content = Option<NewSnapshot>, description = "Optional; an empty body is `{}`"),
    responses((status = 201, description = "The snapshot", body = SnapshotJson),
        (status = 400, description = "Malformed id or body", body = ErrorJson),
        (status = 404, description = "No such sandbox", body = ErrorJson),
        (status = 409, description = "Lost or busy", body = ErrorJson), (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn snapshot(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    owned_sandbox(&state, &caller, &id)?;
    let body: NewSnapshot = json_body(body)?;
    let manager = state.manager().clone();
    let info = blocking(move || manager.snapshot(&id, body.name)).await??;
    state.metrics().observe_blob_written(info.size_bytes);
    Ok((StatusCode::CREATED, Json(SnapshotJson::from(info))).into_response())
}

/// `GET /snapshots`: every snapshot, oldest first.
#[utoipa::path(get, path = "/snapshots", tag = "snapshots",
    responses((status = 200, description = "Every snapshot, oldest first", body = [SnapshotJson]), (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn list_snapshots(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Json<Vec<SnapshotJson>> {
    Json(
        state
            .manager()
            .list_snapshots()
            .into_iter()
            .filter(|s| s.owner.as_deref() == Some(caller.owner()))
            .map(SnapshotJson::from)
            .collect(),
    )
}

/// `DELETE /snapshots/{id}`: 204 or 404.
#[utoipa::path(delete, path = "/snapshots/{id}", tag = "snapshots", params(("id" = String, Path, description = "The snapshot id")),
    responses((status = 204, description = "Deleted"),
        (status = 400, description = "Malformed id", body = ErrorJson),
        (status = 404, description = "No such snapshot", body = ErrorJson), (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn delete_snapshot(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    owned_snapshot(&state, &caller, &id)?;
    let manager = state.manager().clone();
    blocking(move || manager.delete_snapshot(&id)).await??;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sandboxes/{id}/fork {"count"?, "timeout"?, "metadata"?}`: 201 with the new sandboxes. One that
/// failed to start fails the request only if none started; the others are still returned.
#[utoipa::path(post, path = "/sandboxes/{id}/fork", tag = "snapshots", params(("id" = String, Path, description = "The sandbox id")),
    request_body(content = Option<ForkBody>, description = "Optional; an empty body is `{}`"),
    responses((status = 201, description = "The new sandboxes", body = [SandboxJson]),
        (status = 400, description = "Malformed id or body, or count out of range", body = ErrorJson),
        (status = 404, description = "No such sandbox or snapshot", body = ErrorJson),
        (status = 409, description = "Lost or busy", body = ErrorJson),
        (status = 429, description = "Too many running sandboxes", body = ErrorJson), (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn fork(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if id.starts_with(stasis::lifecycle::SNAPSHOT_PREFIX) {
        owned_snapshot(&state, &caller, &id)?;
    } else {
        owned_sandbox(&state, &caller, &id)?;
    }
    let body: ForkBody = json_body(body)?;
    let manager = state.manager().clone();
    let request = CreateRequest {
        timeout: body.timeout.map(Duration::from_secs),
        metadata: body.metadata,
        owner: Some(caller.owner().to_owned()),
        ..CreateRequest::default()
    };
    // Past usize (on 32-bit hosts) is as out of range as any count above the maximum.
    let count = body
        .count
        .map_or(1, |c| usize::try_from(c).unwrap_or(usize::MAX));
    let results = blocking(move || manager.fork(&id, count, request)).await??;
    let mut created = Vec::new();
    let mut first_error = None;
    for result in results {
        match result {
            Ok(info) => created.push(SandboxJson::new(&state, &info, true)),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        Some(error) if created.is_empty() => Err(error.into()),
        _ => Ok((StatusCode::CREATED, Json(created)).into_response()),
    }
}

/// `POST /v2/sandboxes`: [`create`] under the path the newer SDKs use.
#[utoipa::path(post, path = "/v2/sandboxes", tag = "sandboxes", request_body(content = Option<NewSandbox>, description = "Optional; an empty body is `{}`"),
    responses((status = 201, description = "Created and running", body = SandboxJson),
        (status = 400, description = "Unknown template or malformed body", body = ErrorJson), (status = 401, description = "Missing or wrong API key", body = ErrorJson),
        (status = 404, description = "No such snapshot (a `snap_…` templateID)", body = ErrorJson),
        (status = 429, description = "Too many running sandboxes", body = ErrorJson)))]
pub async fn create_v2(
    state: State<AppState>,
    caller: Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    create(state, caller, body).await
}

/// `GET /v2/sandboxes`: [`list`] under the path the newer SDKs use.
#[utoipa::path(get, path = "/v2/sandboxes", tag = "sandboxes",
    params(("metadata" = Option<String>, Query, description = "URL-encoded `k=v&k2=v2` filter"),
        ("state" = Option<String>, Query, description = "Comma-separated states: running, paused"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size, 1 to 100"),
        ("nextToken" = Option<String>, Query, description = "Cursor from `x-next-token`")),
    responses((status = 200, description = "One page, oldest first; the next cursor in `x-next-token`",
        body = [SandboxJson]), (status = 400, description = "Invalid query", body = ErrorJson), (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn list_v2(
    state: State<AppState>,
    caller: Extension<Caller>,
    query: RawQuery,
) -> Result<Response, ApiError> {
    list(state, caller, query).await
}

/// `POST /v2/sandboxes/{id}/connect`: [`connect`] under the path the newer SDKs use.
#[utoipa::path(post, path = "/v2/sandboxes/{id}/connect", tag = "sandboxes", params(("id" = String, Path, description = "The sandbox id")),
    request_body(content = Option<TimeoutBody>, description = "Optional; an empty body is `{}`"),
    responses((status = 200, description = "It was running", body = SandboxJson),
        (status = 201, description = "It was paused and is resumed", body = SandboxJson),
        (status = 400, description = "Malformed id or body, or its template is no longer registered", body = ErrorJson),
        (status = 404, description = "No such sandbox", body = ErrorJson),
        (status = 409, description = "Lost or busy", body = ErrorJson),
        (status = 429, description = "Too many running sandboxes", body = ErrorJson), (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn connect_v2(
    state: State<AppState>,
    caller: Extension<Caller>,
    id: PathId,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    connect(state, caller, id, body).await
}
