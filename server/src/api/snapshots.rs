//! Snapshots and forks as the current E2B SDK speaks them: `POST /sandboxes/{id}/snapshots` answers
//! `{"snapshotID", "names"}` (a `memory: false` one keeps the files only), `GET /snapshots` lists the
//! caller's, filtered by source sandbox and name, a page at a time (`x-next-token`), `DELETE
//! /templates/{id}` (what the SDKs call) and `DELETE /snapshots/{id}` delete one, and `POST
//! /sandboxes/{id}/fork` starts up to [`MAX_FORK_COUNT`] sandboxes from a running sandbox's state, each
//! reported on its own as `{"sandbox": …}` or `{"error": {"code", "message"}}`.
//!
//! A snapshot's id starts a sandbox as a `templateID`; so does its name (the newest snapshot of that
//! name), as E2B's snapshot names are template names.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use stasis::lifecycle::{CreateRequest, PauseMode, SNAPSHOT_PREFIX, SandboxInfo, SnapshotInfo};
use utoipa::ToSchema;

use super::sandboxes::SandboxJson;
use super::{PathId, blocking, json_body, whole_number};
use crate::auth::{Caller, owned_sandbox, owned_snapshot};
use crate::error::{ApiError, ErrorJson};
use crate::state::AppState;
use crate::time::rfc3339;

/// Most sandboxes one fork request starts: the E2B SDK's bound (`MAX_FORK_COUNT`).
pub const MAX_FORK_COUNT: u64 = 20;
/// Timeout of forks whose request gives none, in seconds: the E2B API's default.
pub const FORK_DEFAULT_TIMEOUT: u64 = 15;
/// Largest page of `GET /snapshots`, and its default.
pub const MAX_PAGE: usize = 100;
/// Longest snapshot name.
pub const MAX_NAME_LEN: usize = 128;

/// Body of `POST /sandboxes/{id}/snapshots`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct NewSnapshot {
    /// A name (letters, digits, `.`, `_`, `-`; at most 128), by which `templateID` finds its newest
    /// snapshot; not the name of a template (409).
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    pub name: Option<String>,
    /// `false`: keep the files only; sandboxes started from it cold-start the template. Default `true`.
    pub memory: Option<bool>,
}

/// A snapshot as reported.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotJson {
    /// Its id, usable as a `templateID` to create from it.
    #[serde(rename = "snapshotID")]
    pub snapshot_id: String,
    /// Its names: the one it was given, if any.
    pub names: Vec<String>,
    /// Its name, if given.
    pub name: Option<String>,
    /// The sandbox it was taken from.
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    /// That sandbox's template.
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// That sandbox's metadata.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// When it was taken.
    pub created_at: String,
    /// Size of its blob in bytes.
    pub size_bytes: u64,
    /// `full` (memory and files) or `filesystem` (files only).
    #[schema(value_type = String)]
    pub mode: &'static str,
}

impl From<SnapshotInfo> for SnapshotJson {
    fn from(info: SnapshotInfo) -> Self {
        Self {
            snapshot_id: info.id,
            names: info.name.iter().cloned().collect(),
            name: info.name,
            sandbox_id: info.source_sandbox,
            template_id: info.template,
            metadata: info.metadata,
            created_at: rfc3339(stasis::lifecycle::record::from_ms(info.created_at_ms)),
            size_bytes: info.size_bytes,
            mode: info.mode.as_str(),
        }
    }
}

/// Body of `POST /sandboxes/{id}/fork`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForkBody {
    /// How many sandboxes, 1 to 20 (default 1).
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 1, maximum = 20)]
    pub count: Option<u64>,
    /// Seconds until each fork's timeout applies (default 15, as E2B's API).
    #[serde(default, deserialize_with = "whole_number")]
    pub timeout: Option<u64>,
    /// Metadata of the forks; the source's when absent.
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
}

/// One fork's outcome: the sandbox, or why it did not start.
#[derive(Debug, Serialize, ToSchema)]
pub struct ForkResultJson {
    /// The fork, when it started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxJson>,
    /// Why it did not start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorJson>,
}

/// `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`.
fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=MAX_NAME_LEN).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `POST /sandboxes/{id}/snapshots {"name"?, "memory"?}`: 201 with the snapshot. The sandbox keeps running.
#[utoipa::path(post, path = "/sandboxes/{id}/snapshots", tag = "snapshots", params(("id" = String, Path, description = "The sandbox id")),
    request_body(content = Option<NewSnapshot>, description = "Optional; an empty body is `{}`"),
    responses((status = 201, description = "The snapshot", body = SnapshotJson),
        (status = 400, description = "Malformed id or body, or an invalid name", body = ErrorJson),
        (status = 404, description = "No such sandbox", body = ErrorJson),
        (status = 409, description = "Lost or busy, or the name is a template's", body = ErrorJson), (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn snapshot(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    owned_sandbox(&state, &caller, &id)?;
    let body: NewSnapshot = json_body(body)?;
    if let Some(name) = &body.name {
        if !valid_name(name) {
            return Err(ApiError::bad_request(format!(
                "invalid snapshot name {:?}: 1 to {MAX_NAME_LEN} letters, digits, '.', '_' or '-', \
                 starting with a letter or digit",
                name.chars().take(80).collect::<String>()
            )));
        }
        if state.manager().template(name).is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("{name:?} is a template's name; a snapshot needs another"),
            ));
        }
    }
    let mode = PauseMode::from_memory(body.memory.unwrap_or(true));
    let manager = state.manager().clone();
    let info = blocking(move || manager.snapshot_with(&id, body.name, mode)).await??;
    state.metrics().observe_blob_written(info.size_bytes);
    Ok((StatusCode::CREATED, Json(SnapshotJson::from(info))).into_response())
}

/// The query of `GET /snapshots`.
#[derive(Debug, Default)]
struct SnapshotQuery {
    sandbox_id: Option<String>,
    name: Option<String>,
    limit: usize,
    after: Option<(u64, String)>,
}

fn snapshot_query(raw: &str) -> Result<SnapshotQuery, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
    let mut query = SnapshotQuery {
        limit: MAX_PAGE,
        ..SnapshotQuery::default()
    };
    for (key, value) in pairs {
        match key.as_str() {
            "sandboxID" | "sandbox_id" => query.sandbox_id = Some(value),
            "name" => query.name = Some(value),
            "limit" => {
                query.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=MAX_PAGE).contains(l))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "limit must be 1 to {MAX_PAGE}, not {value:?}"
                        ))
                    })?;
            }
            "nextToken" | "next_token" => query.after = Some(decode_token(&value)?),
            // Unknown parameters are ignored, as newer SDKs may send more.
            _ => {}
        }
    }
    Ok(query)
}

/// A cursor: the creation time and id of the last snapshot of the previous page.
fn encode_token(info: &SnapshotInfo) -> String {
    format!("{}.{}", info.created_at_ms, info.id)
}

fn decode_token(token: &str) -> Result<(u64, String), ApiError> {
    token
        .split_once('.')
        .and_then(|(ms, id)| Some((ms.parse().ok()?, id.to_owned())))
        .filter(|(_, id)| stasis::lifecycle::id::is_valid(id, SNAPSHOT_PREFIX))
        .ok_or_else(|| ApiError::bad_request("invalid nextToken: use the x-next-token of a page"))
}

/// `GET /snapshots?sandboxID=&name=&limit=&nextToken=`: one page of the caller's snapshots, oldest first;
/// the next page's cursor in `x-next-token`, absent on the last page. `name` matches a snapshot's name or
/// id.
#[utoipa::path(get, path = "/snapshots", tag = "snapshots",
    params(("sandboxID" = Option<String>, Query, description = "Only snapshots of this sandbox"),
        ("name" = Option<String>, Query, description = "Only snapshots of this name (or this id)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size, 1 to 100 (default 100)"),
        ("nextToken" = Option<String>, Query, description = "Cursor from `x-next-token`")),
    responses((status = 200, description = "One page, oldest first; the next cursor in `x-next-token`", body = [SnapshotJson]),
        (status = 400, description = "Invalid query", body = ErrorJson),
        (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn list_snapshots(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let query = snapshot_query(query.as_deref().unwrap_or(""))?;
    let mut matching: Vec<SnapshotInfo> = state
        .manager()
        .list_snapshots()
        .into_iter()
        .filter(|s| s.owner.as_deref() == Some(caller.owner()))
        .filter(|s| {
            query
                .sandbox_id
                .as_ref()
                .is_none_or(|id| &s.source_sandbox == id)
        })
        .filter(|s| {
            query
                .name
                .as_ref()
                .is_none_or(|name| s.name.as_ref() == Some(name) || &s.id == name)
        })
        .filter(|s| {
            query
                .after
                .as_ref()
                .is_none_or(|(ms, id)| (s.created_at_ms, &s.id) > (*ms, id))
        })
        .collect();
    let more = matching.len() > query.limit;
    matching.truncate(query.limit);
    let next = more.then(|| matching.last().map(encode_token)).flatten();
    let mut response = Json(
        matching
            .into_iter()
            .map(SnapshotJson::from)
            .collect::<Vec<_>>(),
    )
    .into_response();
    if let Some(token) = next {
        let value = HeaderValue::from_str(&token).map_err(|e| ApiError::internal(&e))?;
        response.headers_mut().insert("x-next-token", value);
    }
    Ok(response)
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

/// `DELETE /templates/{id}`, how the SDKs delete a snapshot (E2B's snapshots are templates): 204, or 404
/// for anything that is not one of the caller's snapshots. Registered templates cannot be deleted (409).
#[utoipa::path(delete, path = "/templates/{id}", tag = "snapshots", operation_id = "delete_template",
    params(("id" = String, Path, description = "The snapshot id")),
    responses((status = 204, description = "The snapshot is deleted"),
        (status = 400, description = "Malformed id", body = ErrorJson),
        (status = 404, description = "No such snapshot", body = ErrorJson),
        (status = 409, description = "A registered template, which cannot be deleted", body = ErrorJson),
        (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn delete_template(
    state: State<AppState>,
    caller: Extension<Caller>,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    if state.manager().template(&id).is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{id} is a registered template; only snapshots can be deleted"),
        ));
    }
    delete_snapshot(state, caller, PathId(id)).await
}

/// `POST /sandboxes/{id}/fork {"count"?, "timeout"?, "metadata"?}`: 201 with one entry per fork, each
/// `{"sandbox": …}` or `{"error": {"code", "message"}}`. The source (a sandbox, running or paused, or a
/// snapshot) keeps running; it is captured once for all the forks.
#[utoipa::path(post, path = "/sandboxes/{id}/fork", tag = "snapshots", params(("id" = String, Path, description = "The sandbox id")),
    request_body(content = Option<ForkBody>, description = "Optional; an empty body is `{}`"),
    responses((status = 201, description = "One entry per fork", body = [ForkResultJson]),
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
    let body: ForkBody = json_body(body)?;
    let timeout = Duration::from_secs(body.timeout.unwrap_or(FORK_DEFAULT_TIMEOUT));
    let results = start_forks(
        &state,
        &caller,
        id,
        body.count,
        Some(timeout),
        body.metadata,
    )
    .await?;
    let results: Vec<ForkResultJson> = results
        .into_iter()
        .map(|result| match result {
            Ok(info) => ForkResultJson {
                sandbox: Some(SandboxJson::new(&state, &info, true)),
                error: None,
            },
            Err(error) => ForkResultJson {
                sandbox: None,
                error: Some(ErrorJson {
                    code: error.status.as_u16(),
                    message: error.message,
                }),
            },
        })
        .collect();
    Ok((StatusCode::CREATED, Json(results)).into_response())
}

/// Starts `count` (default 1, at most [`MAX_FORK_COUNT`]) sandboxes from sandbox or snapshot `id`, which
/// the caller must own: what fork and clone share. One outcome per sandbox, in order.
async fn start_forks(
    state: &AppState,
    caller: &Caller,
    id: String,
    count: Option<u64>,
    timeout: Option<Duration>,
    metadata: Option<std::collections::BTreeMap<String, String>>,
) -> Result<Vec<Result<SandboxInfo, ApiError>>, ApiError> {
    let (source_metadata, envs) = if id.starts_with(SNAPSHOT_PREFIX) {
        (
            owned_snapshot(state, caller, &id)?.metadata,
            Default::default(),
        )
    } else {
        let info = owned_sandbox(state, caller, &id)?;
        (info.metadata, info.envs)
    };
    let count = count.unwrap_or(1);
    if !(1..=MAX_FORK_COUNT).contains(&count) {
        return Err(ApiError::bad_request(format!(
            "count must be 1 to {MAX_FORK_COUNT}, not {count}"
        )));
    }
    let request = CreateRequest {
        timeout,
        metadata: metadata.unwrap_or(source_metadata),
        envs,
        owner: Some(caller.owner().to_owned()),
        ..CreateRequest::default()
    };
    let manager = state.manager().clone();
    let results = blocking(move || manager.fork(&id, count as usize, request)).await??;
    Ok(results
        .into_iter()
        .map(|result| result.map_err(ApiError::from))
        .collect())
}

/// Body of `POST /sandboxes/{id}/clone`, as `novita-sandbox`'s `Sandbox.clone` sends it.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CloneBody {
    /// How many clones, 1 to 20 (default 1).
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 1, maximum = 20)]
    pub count: Option<u64>,
    /// All or nothing: when one clone fails, the others are killed and the request fails.
    #[serde(default)]
    pub strict: bool,
    /// The node to start them on; Stasis is one node, so any value means this one.
    #[serde(default, rename = "nodeID")]
    pub node_id: Option<String>,
    /// Seconds until each clone's timeout applies (default: the server's default timeout).
    #[serde(default, deserialize_with = "whole_number")]
    pub timeout: Option<u64>,
}

/// One clone, as `novita-sandbox` reads it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloneJson {
    /// Its id. (No `clientID`: the SDK would append it to the id.)
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    /// The template of its source.
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// The envd protocol version Stasis speaks.
    pub envd_version: &'static str,
    /// Its envd access token.
    pub envd_access_token: String,
    /// Its traffic access token.
    pub traffic_access_token: String,
}

/// The answer of `POST /sandboxes/{id}/clone`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClonesJson {
    /// The clones that started, in order.
    pub sandboxes: Vec<CloneJson>,
}

/// `POST /sandboxes/{id}/clone {"count"?, "strict"?, "nodeID"?, "timeout"?}`: `novita-sandbox`'s fork. 201
/// with the clones that started; with `strict`, all of them or an error (and none left running). The
/// source keeps running.
#[utoipa::path(post, path = "/sandboxes/{id}/clone", tag = "snapshots", params(("id" = String, Path, description = "The sandbox id")),
    request_body(content = Option<CloneBody>, description = "Optional; an empty body is `{}`"),
    responses((status = 201, description = "The clones that started", body = ClonesJson),
        (status = 400, description = "Malformed id or body, or count out of range", body = ErrorJson),
        (status = 404, description = "No such sandbox or snapshot", body = ErrorJson),
        (status = 409, description = "Lost or busy", body = ErrorJson),
        (status = 429, description = "Too many running sandboxes", body = ErrorJson),
        (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn clone(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: CloneBody = json_body(body)?;
    let timeout = body.timeout.map(Duration::from_secs);
    let results = start_forks(&state, &caller, id, body.count, timeout, None).await?;
    let mut started: Vec<SandboxInfo> = Vec::new();
    let mut first_error = None;
    for result in results {
        match result {
            Ok(info) => started.push(info),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    if let Some(error) = first_error
        && (body.strict || started.is_empty())
    {
        // All or nothing: the ones that started go again.
        let manager = state.manager().clone();
        let ids: Vec<String> = started.iter().map(|s| s.id.clone()).collect();
        blocking(move || {
            for id in ids {
                if let Err(error) = manager.kill(&id) {
                    tracing::warn!(sandbox = %id, %error, "a clone of a failed strict clone stayed");
                }
            }
        })
        .await?;
        return Err(error);
    }
    let sandboxes = started
        .iter()
        .map(|info| CloneJson {
            sandbox_id: info.id.clone(),
            template_id: info.template.clone(),
            envd_version: super::sandboxes::ENVD_VERSION,
            envd_access_token: state.access_token(&info.id),
            traffic_access_token: state.access_token(&info.id),
        })
        .collect();
    Ok((StatusCode::CREATED, Json(ClonesJson { sandboxes })).into_response())
}
