//! Volumes on the control plane (E2B's and Novita's `Volume.create/connect/list/destroy`): `POST
//! /volumes {"name"}` (201 `{"volumeID", "name", "token"}`), `GET /volumes`, `GET /volumes/{id}`,
//! `DELETE /volumes/{id}` (204; 409 while a sandbox mounts it). A volume belongs to the key that created
//! it; another key's is 404. Its files are reached through the volume file API with its token
//! ([`super::volume_files`]) or by mounting it into sandboxes (`volumeMounts` of a create).

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use stasis::lifecycle::{VolumeError, VolumeInfo};
use utoipa::ToSchema;

use super::{PathId, blocking, json_body, whole_number};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorJson};
use crate::state::AppState;

/// Body of `POST /volumes`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewVolume {
    /// Its name: 1 to 63 letters, digits, `.`, `_` or `-`, starting with a letter or digit; unique among
    /// the caller's volumes.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
    pub name: String,
    /// Its quota in GiB, 1 to 64 (default 1).
    #[serde(default, rename = "quotaSizeGiB", deserialize_with = "whole_number")]
    #[schema(minimum = 1, maximum = 64)]
    pub quota_size_gib: Option<u64>,
}

/// A volume as reported.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeJson {
    /// Its id.
    #[serde(rename = "volumeID")]
    pub volume_id: String,
    /// Its name.
    pub name: String,
    /// The token of its file API (`Authorization: Bearer`); absent from list items.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Its quota in GiB.
    #[serde(rename = "quotaSizeGiB")]
    pub quota_size_gib: u64,
    /// Bytes of its files.
    pub used_size_bytes: u64,
}

impl VolumeJson {
    fn new(state: &AppState, info: &VolumeInfo, with_token: bool) -> Self {
        let used = state
            .manager()
            .volumes()
            .quota(&info.id)
            .map_or(0, |q| q.used_bytes());
        Self {
            volume_id: info.id.clone(),
            name: info.name.clone(),
            token: with_token.then(|| state.volume_token(&info.id)),
            quota_size_gib: info.quota_bytes.div_ceil(1 << 30),
            used_size_bytes: used,
        }
    }
}

/// Volume `id` if `caller` owns it; anyone else's is [`VolumeError::NotFound`], as an unknown one.
pub fn owned_volume(state: &AppState, caller: &Caller, id: &str) -> Result<VolumeInfo, ApiError> {
    let info = state.manager().volumes().get(id)?;
    if info.owner.as_deref() == Some(caller.owner()) {
        Ok(info)
    } else {
        Err(VolumeError::NotFound(id.to_owned()).into())
    }
}

/// `POST /volumes {"name", "quotaSizeGiB"?}`: 201 with the volume and its token.
#[utoipa::path(post, path = "/volumes", tag = "volumes", operation_id = "create_volume",
    request_body = NewVolume,
    responses((status = 201, description = "Created", body = VolumeJson),
        (status = 400, description = "Malformed body, invalid name or quota", body = ErrorJson),
        (status = 409, description = "The caller has a volume of this name", body = ErrorJson),
        (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: NewVolume = json_body(body)?;
    let quota = match body.quota_size_gib {
        Some(gib) if !(1..=64).contains(&gib) => {
            return Err(VolumeError::Quota(gib).into());
        }
        other => other.map(|gib| gib << 30),
    };
    let owner = caller.owner().to_owned();
    let manager = state.manager().clone();
    let info = blocking(move || manager.volumes().create(&body.name, Some(owner), quota)).await??;
    tracing::info!(volume = %info.id, name = %info.name, "volume created");
    Ok((
        StatusCode::CREATED,
        Json(VolumeJson::new(&state, &info, true)),
    )
        .into_response())
}

/// `GET /volumes`: the caller's volumes, oldest first.
#[utoipa::path(get, path = "/volumes", tag = "volumes", operation_id = "list_volumes",
    responses((status = 200, description = "The caller's volumes", body = [VolumeJson]),
        (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Json<Vec<VolumeJson>> {
    Json(
        state
            .manager()
            .volumes()
            .list(Some(caller.owner()))
            .iter()
            .map(|info| VolumeJson::new(&state, info, false))
            .collect(),
    )
}

/// `GET /volumes/{id}`: the volume and its token.
#[utoipa::path(get, path = "/volumes/{id}", tag = "volumes", operation_id = "get_volume",
    params(("id" = String, Path, description = "The volume id")),
    responses((status = 200, description = "The volume", body = VolumeJson),
        (status = 400, description = "Malformed id", body = ErrorJson),
        (status = 404, description = "No such volume", body = ErrorJson),
        (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn info(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
) -> Result<Json<VolumeJson>, ApiError> {
    let info = owned_volume(&state, &caller, &id)?;
    Ok(Json(VolumeJson::new(&state, &info, true)))
}

/// `DELETE /volumes/{id}`: 204, its files deleted; 404 if unknown; 409 while a sandbox (running or
/// paused) mounts it.
#[utoipa::path(delete, path = "/volumes/{id}", tag = "volumes", operation_id = "destroy_volume",
    params(("id" = String, Path, description = "The volume id")),
    responses((status = 204, description = "Destroyed"),
        (status = 400, description = "Malformed id", body = ErrorJson),
        (status = 404, description = "No such volume", body = ErrorJson),
        (status = 409, description = "A sandbox mounts it", body = ErrorJson),
        (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn destroy(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    owned_volume(&state, &caller, &id)?;
    let manager = state.manager().clone();
    blocking(move || manager.destroy_volume(&id)).await??;
    Ok(StatusCode::NO_CONTENT)
}
