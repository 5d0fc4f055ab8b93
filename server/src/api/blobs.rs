//! Moving a paused sandbox between servers: `GET /sandboxes/{id}/blob` streams its blob out, and
//! `POST /sandboxes/import` takes one in as a new paused sandbox, verified before it is accepted.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use tokio_util::io::ReaderStream;

use super::sandboxes::SandboxJson;
use super::{PathId, blocking};
use crate::auth::{Caller, owned_sandbox};
use crate::error::{ApiError, ErrorJson};
use crate::state::AppState;

/// `GET /sandboxes/{id}/blob`: the blob of a paused sandbox, streamed from its file (blobs can be far
/// larger than what is worth holding in memory).
#[utoipa::path(get, path = "/sandboxes/{id}/blob", tag = "blobs",
    params(("id" = String, Path, description = "The sandbox id")),
    responses((status = 200, description = "The blob", content_type = "application/octet-stream",
            body = Vec<u8>),
        (status = 400, description = "Malformed id", body = ErrorJson),
        (status = 404, description = "No such sandbox", body = ErrorJson),
        (status = 409, description = "The sandbox is running (pause it first), lost or busy",
            body = ErrorJson),
        (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn export(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    owned_sandbox(&state, &caller, &id)?;
    let manager = state.manager().clone();
    let file = blocking(move || manager.export_blob(&id)).await??;
    let length = file.metadata().map_err(|e| ApiError::internal(&e))?.len();
    let stream = ReaderStream::new(tokio::fs::File::from_std(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, length.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `POST /sandboxes/import`, body = a blob: 201 with a new paused sandbox of the blob's template
/// (`connect` resumes it). The request body limit applies.
#[utoipa::path(post, path = "/sandboxes/import", tag = "blobs",
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "A blob exported by `GET /sandboxes/{id}/blob`"),
    responses((status = 201, description = "The new paused sandbox", body = SandboxJson),
        (status = 400, description = "The blob does not decode; the message says why", body = ErrorJson),
        (status = 404, description = "The blob's template is not registered here", body = ErrorJson),
        (status = 413, description = "The blob is larger than the body limit", body = ErrorJson),
        (status = 429, description = "Too many paused sandboxes", body = ErrorJson),
        (status = 507, description = "Less free disk than the server's floor (`--min-free-disk`)", body = ErrorJson),
        (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn import(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let blob =
        body.map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))?;
    let manager = state.manager().clone();
    let size = blob.len() as u64;
    let owner = Some(caller.owner().to_owned());
    let info = blocking(move || manager.import_blob_owned(&blob, owner)).await??;
    state.metrics().observe_blob_written(size);
    tracing::info!(sandbox = %info.id, template = %info.template, bytes = size, "imported");
    Ok((
        StatusCode::CREATED,
        Json(SandboxJson::new(&state, &info, true)),
    )
        .into_response())
}
