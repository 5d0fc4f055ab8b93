//! `/files`: download a file's raw bytes, upload one or more files (multipart field `file`, or a raw
//! `application/octet-stream` body). Errors are envd's REST shape, `{"code": <status>, "message"}`.

use std::path::Path;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{guest_path, io_error, with_root};
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
    let bytes = with_root(&state, id, move |root| {
        let (relative, shown) = guest_path(&path);
        root.read(&relative).map_err(|e| io_error(e, &shown))
    })
    .await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
        .into_response())
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
    if request
        .headers()
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v != "identity")
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "compressed uploads are not supported; send the file uncompressed",
        ));
    }
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
    let written = with_root(&state, id, move |root| {
        let mut written = Vec::with_capacity(files.len());
        for (path, bytes) in files {
            let (relative, shown) = guest_path(&path);
            if let Some(parent) = relative.parent().filter(|p| !p.as_os_str().is_empty()) {
                root.create_dir_all(parent)
                    .map_err(|e| io_error(e, &shown))?;
            }
            root.write(&relative, &bytes)
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
