//! The control plane (sdk-compat.md §2): create, list, info, kill, pause (full or filesystem-only),
//! connect (restoring memory or rebooting), timeout, refreshes and resume, with the response shapes the E2B
//! and Novita SDKs parse. Snapshots and forks are [`super::snapshots`], the network policy
//! [`super::network`]. Every handler sees only the calling
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
    CreateRequest, LifecyclePolicy, ListQuery, OnTimeout, PauseMode, SandboxInfo, SandboxState,
    VolumeError, VolumeMount,
};
use utoipa::ToSchema;

use super::network::NetworkJson;
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
    /// The domain sandbox hosts are under (`<port>-<sandboxID>.<domain>` reaches port `port` through this
    /// server); the SDKs still use their configured sandbox URL for envd when they have one.
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
    /// What its timeout does, and whether traffic resumes it while paused.
    pub lifecycle: LifecycleJson,
    /// While paused: what its blob holds, `full` or `filesystem` (then a resume cold-starts it).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub pause_mode: Option<&'static str>,
    /// The volumes it mounts.
    pub volume_mounts: Vec<VolumeMountJson>,
    /// Its network policy, when one was set: stored, reported, and enforced on the guests' outbound TCP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkJson>,
    /// Whether internet access was explicitly allowed or denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_internet_access: Option<bool>,
}

/// A sandbox's lifecycle as the SDKs read it back.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleJson {
    /// `kill` or `pause`.
    #[schema(value_type = String)]
    pub on_timeout: &'static str,
    /// Whether activity resumes it while it is paused.
    pub auto_resume: bool,
}

/// A volume mount, as create takes it and info reports it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VolumeMountJson {
    /// The volume's name (its id is accepted too).
    pub name: String,
    /// The absolute path it is mounted at.
    pub path: String,
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
            domain: state.domain(),
            started_at: rfc3339(info.started_at),
            end_at: rfc3339(info.end_at),
            cpu_count: 1,
            memory_mb: limits.max_memory_bytes >> 20,
            disk_size_mb: limits.max_disk_bytes >> 20,
            state: info.state.as_str(),
            metadata: info.metadata.clone(),
            lifecycle: LifecycleJson {
                on_timeout: match info.lifecycle.on_timeout {
                    OnTimeout::Kill => "kill",
                    OnTimeout::Pause => "pause",
                },
                auto_resume: info.lifecycle.auto_resume,
            },
            pause_mode: info.pause_mode.map(PauseMode::as_str),
            volume_mounts: info
                .mounts
                .iter()
                .map(|m| VolumeMountJson {
                    name: m.name.clone(),
                    path: m.path.clone(),
                })
                .collect(),
            network: info.network.as_ref().map(NetworkJson::report),
            allow_internet_access: info.network.as_ref().and_then(|n| n.allow_internet_access),
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
    /// `{"onTimeout": "pause"|"kill"|{"action", "mode"}, "autoResume": …}` (snake_case accepted too).
    #[schema(value_type = Option<Object>)]
    pub lifecycle: Option<serde_json::Map<String, serde_json::Value>>,
    /// `false`: a pause on timeout keeps the files only (resuming then cold-starts the template).
    pub auto_pause_memory: Option<bool>,
    /// Volumes to mount: `[{"name", "path"}]`.
    #[serde(default)]
    pub volume_mounts: Vec<VolumeMountJson>,
    /// The network policy: stored, reported, and enforced on the guests' outbound TCP.
    pub network: Option<NetworkJson>,
    /// `false` denies all egress (stored and reported).
    #[serde(rename = "allow_internet_access", alias = "allowInternetAccess")]
    pub allow_internet_access: Option<bool>,
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
    /// `false`: a paused sandbox cold-starts its template on its files, ignoring its memory (E2B's
    /// `on_resume="reboot"`). A sandbox paused filesystem-only cold-starts whatever this says.
    pub memory: Option<bool>,
}

/// Body of `POST /sandboxes/{id}/pause`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PauseBody {
    /// `false`: keep the files only; the next resume cold-starts the template (E2B's
    /// `mode="filesystem"`). Default `true`.
    pub memory: Option<bool>,
    /// E2B's `strict`: refuse the pause when the guest agent does not answer. The agent here is the
    /// server itself, which always answers, so this never refuses.
    pub require_healthy_guest: Option<bool>,
}

/// Body of `POST /sandboxes/{id}/refreshes`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct RefreshBody {
    /// Seconds from now the sandbox is kept alive (its own timeout when absent).
    #[serde(default, deserialize_with = "whole_number")]
    pub duration: Option<u64>,
}

/// Body of `POST /sandboxes/{id}/timeout`, where the timeout is required.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SetTimeoutBody {
    /// Seconds from now until the timeout applies.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(value_type = u64, required = true)]
    pub timeout: Option<u64>,
}

/// The lifecycle policy a create request asks for: `autoPause`, `autoPauseMemory`, `autoResume` and
/// `lifecycle` as the two SDK families spell them, read leniently because their shapes differ between
/// SDK versions. A filesystem-only pause on timeout with auto-resume is refused, as the E2B SDK documents:
/// traffic cannot wake a sandbox whose memory is gone.
fn policy(body: &NewSandbox) -> Result<LifecyclePolicy, ApiError> {
    let lifecycle = body.lifecycle.as_ref();
    let field =
        |camel: &str, snake: &str| lifecycle.and_then(|l| l.get(camel).or_else(|| l.get(snake)));
    let on_timeout = field("onTimeout", "on_timeout");
    // `"pause"`, or the object form `{"action": "pause", "mode": "filesystem"}`.
    let action = on_timeout.and_then(|v| v.as_str().or_else(|| v.get("action")?.as_str()));
    let pause = body.auto_pause.unwrap_or(false)
        || action == Some("pause")
        || enabled(field("autoPause", "auto_pause"));
    let files_only = body.auto_pause_memory == Some(false)
        || on_timeout.and_then(|v| v.get("mode")?.as_str()) == Some("filesystem")
        || on_timeout.and_then(|v| v.get("keep_memory")?.as_bool()) == Some(false);
    let resume = body.auto_resume.as_ref().is_some_and(Toggle::enabled)
        || enabled(field("autoResume", "auto_resume"));
    if pause && files_only && resume {
        return Err(ApiError::bad_request(
            "autoResume cannot be combined with a filesystem-only pause on timeout \
             (autoPauseMemory: false): a sandbox without its memory must be resumed with connect",
        ));
    }
    Ok(LifecyclePolicy {
        on_timeout: if pause {
            OnTimeout::Pause
        } else {
            OnTimeout::Kill
        },
        auto_resume: resume,
        idle_timeout: None,
        timeout_pause_mode: if pause && files_only {
            PauseMode::Filesystem
        } else {
            PauseMode::Full
        },
    })
}

/// What `templateID` names: a registered template, a snapshot id (`snap_…`), or the name of one of the
/// caller's snapshots (its newest), in that order. An unknown name is left for the manager to refuse.
fn resolve_template(state: &AppState, caller: &Caller, name: &str) -> Result<String, ApiError> {
    if name.starts_with(stasis::lifecycle::SNAPSHOT_PREFIX) {
        owned_snapshot(state, caller, name)?;
        return Ok(name.to_owned());
    }
    if state.manager().template(name).is_some() {
        return Ok(name.to_owned());
    }
    let newest =
        state.manager().list_snapshots().into_iter().rfind(|s| {
            s.owner.as_deref() == Some(caller.owner()) && s.name.as_deref() == Some(name)
        });
    Ok(newest.map_or_else(|| name.to_owned(), |s| s.id))
}

/// The volumes a create request mounts, found by name (or id) among the caller's.
pub(crate) fn resolve_mounts(
    state: &AppState,
    caller: &Caller,
    mounts: &[VolumeMountJson],
) -> Result<Vec<VolumeMount>, ApiError> {
    let volumes = state.manager().volumes();
    mounts
        .iter()
        .map(|m| {
            let volume = volumes
                .by_name(Some(caller.owner()), &m.name)
                .or_else(|_| {
                    volumes
                        .get(&m.name)
                        .ok()
                        .filter(|v| v.owner.as_deref() == Some(caller.owner()))
                        .ok_or_else(|| VolumeError::NotFound(m.name.clone()))
                })?;
            Ok(VolumeMount {
                volume_id: volume.id,
                name: volume.name,
                path: m.path.clone(),
            })
        })
        .collect()
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
    let requested = body.template_id.as_deref().unwrap_or(DEFAULT_TEMPLATE);
    let template = resolve_template(&state, &caller, requested)?;
    let mut network = body.network.clone().map(NetworkJson::into_policy);
    if let Some(allow) = body.allow_internet_access {
        network
            .get_or_insert_with(Default::default)
            .allow_internet_access = Some(allow);
    }
    let request = CreateRequest {
        template,
        timeout: body.timeout.map(Duration::from_secs),
        lifecycle: policy(&body)?,
        mounts: resolve_mounts(&state, &caller, &body.volume_mounts)?,
        network,
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

/// `POST /sandboxes/{id}/pause {"memory"?, "requireHealthyGuest"?}`: 204, 409 if already paused, 404 if
/// unknown. No body (as the JS SDK sends) is a full pause; `memory: false` keeps the files only.
#[utoipa::path(post, path = "/sandboxes/{id}/pause", tag = "sandboxes", params(("id" = String, Path, description = "The sandbox id")),
    request_body(content = Option<PauseBody>, description = "Optional; an empty body is `{}`"),
    responses((status = 204, description = "Paused to its blob"),
        (status = 400, description = "Malformed id", body = ErrorJson),
        (status = 400, description = "Malformed body", body = ErrorJson),
        (status = 404, description = "No such sandbox", body = ErrorJson),
        (status = 409, description = "Already paused, lost or busy", body = ErrorJson),
        (status = 429, description = "Too many paused sandboxes", body = ErrorJson),
        (status = 507, description = "Less free disk than the server's floor (`--min-free-disk`): nothing was written, the sandbox keeps running", body = ErrorJson),
        (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn pause(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    owned_sandbox(&state, &caller, &id)?;
    let body: PauseBody = json_body(body)?;
    let mode = PauseMode::from_memory(body.memory.unwrap_or(true));
    let manager = state.manager().clone();
    let target = id.clone();
    let started = std::time::Instant::now();
    if blocking(move || manager.pause_with(&target, mode)).await?? {
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
    connect_sandbox(state, id, body).await
}

/// Connects to (and resumes, if paused) sandbox `id`, whose owner was checked.
async fn connect_sandbox(
    state: AppState,
    id: String,
    body: TimeoutBody,
) -> Result<Response, ApiError> {
    let manager = state.manager().clone();
    let started = std::time::Instant::now();
    let mode = PauseMode::from_memory(body.memory.unwrap_or(true));
    let timeout = body.timeout.map(Duration::from_secs);
    let connected = blocking(move || manager.connect_with(&id, timeout, mode)).await??;
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

/// `POST /sandboxes/{id}/refreshes {"duration"?}`: 204; keeps a running sandbox alive `duration`
/// seconds from now (its end time only moves later). A paused sandbox is 409: connect to it.
#[utoipa::path(post, path = "/sandboxes/{id}/refreshes", tag = "sandboxes", params(("id" = String, Path, description = "The sandbox id")),
    request_body(content = Option<RefreshBody>, description = "Optional; an empty body is `{}`"),
    responses((status = 204, description = "Kept alive"),
        (status = 400, description = "Malformed id or body", body = ErrorJson),
        (status = 404, description = "No such sandbox", body = ErrorJson),
        (status = 409, description = "Paused, lost or busy", body = ErrorJson), (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn refresh(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let info = owned_sandbox(&state, &caller, &id)?;
    let body: RefreshBody = json_body(body)?;
    let manager = state.manager().clone();
    let duration = match body.duration {
        Some(seconds) => Duration::from_secs(seconds),
        None => info
            .end_at
            .duration_since(info.started_at)
            .unwrap_or_default(),
    };
    blocking(move || manager.refresh(&id, duration)).await??;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sandboxes/{id}/resume {"timeout"?}` (E2B's older call): 201 with the resumed sandbox; 409 if it
/// is running already.
#[utoipa::path(post, path = "/sandboxes/{id}/resume", tag = "sandboxes", params(("id" = String, Path, description = "The sandbox id")),
    request_body(content = Option<TimeoutBody>, description = "Optional; an empty body is `{}`"),
    responses((status = 201, description = "It was paused and is resumed", body = SandboxJson),
        (status = 400, description = "Malformed id or body", body = ErrorJson),
        (status = 404, description = "No such sandbox", body = ErrorJson),
        (status = 409, description = "Running already, lost or busy", body = ErrorJson),
        (status = 429, description = "Too many running sandboxes", body = ErrorJson), (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn resume(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let info = owned_sandbox(&state, &caller, &id)?;
    let body: TimeoutBody = json_body(body)?;
    if info.state != SandboxState::Paused {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("sandbox {id} is not paused"),
        ));
    }
    connect_sandbox(state, id, body).await
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
