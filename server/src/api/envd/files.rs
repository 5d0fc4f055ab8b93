//! `/files`: download a file's raw bytes, upload one or more files (multipart field `file`, or a raw
//! `application/octet-stream` body, either of them optionally sent with `Content-Encoding: gzip`). Errors
//! are envd's REST shape, `{"code": <status>, "message"}`.
//!
//! A gzip body is decompressed before it is parsed, through a reader that stops one byte past the body
//! limit: what it inflates to is bounded like an uncompressed body (413 past it, so a small "gzip bomb"
//! cannot fill memory), and a body that is not valid gzip is a 400.

use std::io::Read;
use std::path::Path;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{io_error, with_fs};
use crate::api::blocking;
use crate::auth::envd_sandbox;
use crate::error::ApiError;
use crate::state::AppState;

/// Query of `/files`.
#[derive(Debug, Default, Deserialize)]
pub struct FileQuery {
    /// The guest path.
    pub path: Option<String>,
}

/// One written file, as the SDKs expect back from an upload.
#[derive(Debug, Serialize)]
pub struct WrittenFile {
    /// Its base name.
    pub name: String,
    /// Always `file`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Its absolute guest path.
    pub path: String,
}

/// `GET /files?path=…`: the file's bytes; 404 if it does not exist.
pub async fn download(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<FileQuery>,
) -> Result<Response, ApiError> {
    let id = envd_sandbox(&state, &headers)?;
    let path = query
        .path
        .ok_or_else(|| ApiError::bad_request("the path query parameter is required"))?;
    let bytes = with_fs(&state, id, move |fs| {
        let place = fs.place(&path)?;
        place
            .dir
            .read(&place.relative)
            .map_err(|e| io_error(e, &place.shown))
    })
    .await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
        .into_response())
}

/// The request with its body decompressed when it is sent with `Content-Encoding: gzip`; any other
/// encoding than gzip or identity is refused with 415.
async fn decode_content(state: &AppState, request: Request) -> Result<Request, ApiError> {
    let encoding = request
        .headers()
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("").trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("identity") => return Ok(request),
        Some("gzip" | "x-gzip") => {}
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content encoding {other:?} is not supported; send gzip or no encoding"),
            ));
        }
    }
    let limit = state.max_body_bytes();
    let (mut parts, body) = request.into_parts();
    let compressed = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
        .await
        .map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    let inflated = blocking(move || gunzip(&compressed, limit)).await??;
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.remove(header::CONTENT_LENGTH);
    Ok(Request::from_parts(parts, axum::body::Body::from(inflated)))
}

/// Inflates a gzip stream (all its members) to at most `limit` bytes: 413 past it, 400 if it is not gzip.
pub fn gunzip(compressed: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut inflated = Vec::new();
    flate2::read::MultiGzDecoder::new(compressed)
        .take(limit as u64 + 1)
        .read_to_end(&mut inflated)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid gzip: {e}")))?;
    if inflated.len() > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the decompressed body exceeds the limit of {limit} bytes"),
        ));
    }
    Ok(inflated)
}

/// `POST /files?path=…`: writes the uploaded files (creating parent directories) and lists them.
pub async fn upload(
    State(state): State<AppState>,
    Query(query): Query<FileQuery>,
    request: Request,
) -> Result<Json<Vec<WrittenFile>>, ApiError> {
    let id = envd_sandbox(&state, request.headers())?;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let request = decode_content(&state, request).await?;
    let mut files: Vec<(String, Bytes)> = Vec::new();
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(request, &state)
            .await
            .map_err(|r| ApiError::new(r.status(), r.body_text()))?;
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?
        {
            if field.name() != Some("file") {
                continue;
            }
            // A single-file write names the path in the query; multi-file writes name each file.
            let path = query
                .path
                .clone()
                .or_else(|| field.file_name().map(str::to_owned))
                .ok_or_else(|| ApiError::bad_request("a file part needs a path or a file name"))?;
            let bytes = field
                .bytes()
                .await
                .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
            files.push((path, bytes));
        }
    } else {
        let path = query
            .path
            .clone()
            .ok_or_else(|| ApiError::bad_request("the path query parameter is required"))?;
        let bytes = Bytes::from_request(request, &state)
            .await
            .map_err(|r| ApiError::new(r.status(), r.body_text()))?;
        files.push((path, bytes));
    }
    if files.is_empty() {
        return Err(ApiError::bad_request(
            "no file part named \"file\" in the upload",
        ));
    }
    let written = with_fs(&state, id, move |fs| {
        let mut written = Vec::with_capacity(files.len());
        for (path, bytes) in files {
            let place = fs.place(&path)?;
            let (root, relative, shown) = (&place.dir, &place.relative, place.shown.clone());
            if let Some(parent) = relative.parent().filter(|p| !p.as_os_str().is_empty()) {
                root.create_dir_all(parent)
                    .map_err(|e| io_error(e, &shown))?;
            }
            root.write(relative, &bytes)
                .map_err(|e| io_error(e, &shown))?;
            let name = Path::new(&shown)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            written.push(WrittenFile {
                name,
                kind: "file",
                path: shown,
            });
        }
        Ok(written)
    })
    .await?;
    Ok(Json(written))
}
