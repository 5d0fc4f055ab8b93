//! The volume file API the E2B SDK's `Volume` uses (`E2B_VOLUME_API_URL`, here the server's own origin):
//! `/volumecontent/{id}/file` (GET reads, PUT writes), `/dir` (GET lists, POST makes), `/path` (GET
//! stats, DELETE removes, PATCH changes the mode). Every call carries the volume's token as
//! `Authorization: Bearer` (401 without it, 403 with another); errors are `{"code", "message"}`.
//!
//! Paths are relative to the volume's root (`/` is the root), resolved through a capability on it, so
//! none leaves the volume. Writes count against the volume's quota, shared with the sandboxes that mount
//! it. Files belong to the volume, not to a user: `uid`/`gid` cannot be set (400).

use std::path::{Path, PathBuf};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cap_std::fs::{Dir, Metadata, MetadataExt, PermissionsExt};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{PathId, blocking, json_body};
use crate::auth::constant_time_eq;
use crate::error::ApiError;
use crate::state::AppState;
use crate::time::rfc3339;

/// Deepest listing `GET /dir` walks.
pub const MAX_DEPTH: u32 = 16;
/// Most entries one listing returns.
pub const MAX_LISTED: usize = 10_000;

/// The query of every call.
#[derive(Debug, Default)]
struct Query {
    path: Option<String>,
    depth: Option<u32>,
    mode: Option<u32>,
    force: bool,
}

fn query(raw: Option<&str>) -> Result<Query, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
    let mut query = Query::default();
    for (key, value) in pairs {
        let number = |max: u32| {
            value
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| {
                    ApiError::bad_request(format!("{key} must be 0 to {max}, not {value:?}"))
                })
        };
        match key.as_str() {
            "path" => query.path = Some(value.clone()),
            "depth" => query.depth = Some(number(MAX_DEPTH)?.max(1)),
            "mode" => query.mode = Some(number(0o7777)?),
            "force" => query.force = value == "true" || value == "1",
            "uid" | "gid" => return Err(uid_gid()),
            _ => {}
        }
    }
    Ok(query)
}

fn uid_gid() -> ApiError {
    ApiError::bad_request("uid and gid cannot be set: a volume's files belong to the volume")
}

/// The volume's directory, once the request's token is the volume's.
fn volume_dir(state: &AppState, headers: &HeaderMap, id: &str) -> Result<(Dir, PathBuf), ApiError> {
    let volumes = state.manager().volumes();
    let host = volumes.data_dir(id)?;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing volume token (Authorization: Bearer)",
            )
        })?;
    if !constant_time_eq(token.as_bytes(), state.volume_token(id).as_bytes()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the token is not this volume's",
        ));
    }
    let dir = Dir::open_ambient_dir(&host, cap_std::ambient_authority())
        .map_err(|e| ApiError::internal(&e))?;
    Ok((dir, host))
}

/// A path relative to the volume's root, and the absolute one to report.
fn relative(path: Option<&str>) -> Result<(PathBuf, String), ApiError> {
    let path = path.ok_or_else(|| ApiError::bad_request("the path query parameter is required"))?;
    let trimmed = path.trim_matches('/');
    Ok(if trimmed.is_empty() {
        (PathBuf::from("."), "/".to_owned())
    } else {
        (PathBuf::from(trimmed), format!("/{trimmed}"))
    })
}

/// An I/O failure on `shown` as the SDK maps it: missing is 404, existing 409, leaving the volume 403.
fn io_error(error: std::io::Error, shown: &str) -> ApiError {
    use std::io::ErrorKind as K;
    let status = match error.kind() {
        K::NotFound => StatusCode::NOT_FOUND,
        K::AlreadyExists | K::DirectoryNotEmpty => StatusCode::CONFLICT,
        K::PermissionDenied => StatusCode::FORBIDDEN,
        K::InvalidInput | K::NotADirectory | K::IsADirectory => StatusCode::BAD_REQUEST,
        K::StorageFull | K::QuotaExceeded | K::FileTooLarge => StatusCode::INSUFFICIENT_STORAGE,
        _ => return ApiError::internal(&error),
    };
    ApiError::new(status, format!("{shown}: {error}"))
}

/// `VolumeEntryStat` of `shown`.
fn stat_json(dir: &Dir, relative: &Path, shown: &str, meta: &Metadata) -> Value {
    let kind = if meta.is_symlink() {
        "symlink"
    } else if meta.is_dir() {
        "directory"
    } else if meta.is_file() {
        "file"
    } else {
        "unknown"
    };
    let time = |seconds: i64, nanos: i64| {
        let at = std::time::UNIX_EPOCH
            + std::time::Duration::new(seconds.max(0) as u64, nanos.clamp(0, 999_999_999) as u32);
        rfc3339(at)
    };
    let name = Path::new(shown)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".to_owned());
    let mut stat = json!({
        "name": name,
        "type": kind,
        "path": shown,
        "size": if meta.is_dir() { 0 } else { meta.len() },
        "mode": meta.permissions().mode() & 0o7777,
        "uid": meta.uid(),
        "gid": meta.gid(),
        "atime": time(meta.atime(), meta.atime_nsec()),
        "mtime": time(meta.mtime(), meta.mtime_nsec()),
        "ctime": time(meta.ctime(), meta.ctime_nsec()),
    });
    if meta.is_symlink()
        && let Ok(target) = dir.read_link(relative)
    {
        stat["target"] = json!(target.to_string_lossy());
    }
    stat
}

fn stat(dir: &Dir, relative: &Path, shown: &str) -> Result<Value, ApiError> {
    let meta = dir
        .symlink_metadata(relative)
        .map_err(|e| io_error(e, shown))?;
    Ok(stat_json(dir, relative, shown, &meta))
}

fn set_mode(dir: &Dir, relative: &Path, shown: &str, mode: Option<u32>) -> Result<(), ApiError> {
    if let Some(mode) = mode {
        dir.set_permissions(relative, cap_std::fs::Permissions::from_mode(mode))
            .map_err(|e| io_error(e, shown))?;
    }
    Ok(())
}

/// `GET /volumecontent/{id}/file?path=`: the file's bytes.
pub async fn read_file(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathId(id): PathId,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = query(raw.as_deref())?;
    let (dir, _) = volume_dir(&state, &headers, &id)?;
    let (relative, shown) = relative(query.path.as_deref())?;
    let bytes = blocking(move || dir.read(&relative).map_err(|e| io_error(e, &shown))).await??;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
        .into_response())
}

/// `PUT /volumecontent/{id}/file?path=&mode=&force=`, body = the file: writes it (creating its parent
/// directories; an existing file is replaced) within the volume's quota; 201 with its stat.
pub async fn write_file(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathId(id): PathId,
    RawQuery(raw): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let query = query(raw.as_deref())?;
    let (dir, _) = volume_dir(&state, &headers, &id)?;
    let quota = state.manager().volumes().quota(&id)?;
    let (relative, shown) = relative(query.path.as_deref())?;
    if relative == Path::new(".") {
        return Err(ApiError::bad_request("the volume's root is a directory"));
    }
    let body = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    let stat = blocking(move || {
        if let Some(parent) = relative.parent().filter(|p| !p.as_os_str().is_empty()) {
            dir.create_dir_all(parent)
                .map_err(|e| io_error(e, &shown))?;
        }
        let old = dir.symlink_metadata(&relative).ok();
        let old_len = old
            .as_ref()
            .filter(|m| m.is_file())
            .map_or(0, Metadata::len);
        let grow = (body.len() as u64).saturating_sub(old_len);
        let storage = |what: &str| {
            ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                format!("{shown}: the volume's quota has no room for {what}"),
            )
        };
        quota
            .reserve_bytes(grow)
            .map_err(|_| storage("these bytes"))?;
        if old.is_none() && quota.reserve_file().is_err() {
            quota.release_bytes(grow);
            return Err(storage("another file"));
        }
        if let Err(error) = dir.write(&relative, &body) {
            quota.release_bytes(grow);
            if old.is_none() {
                quota.release_file();
            }
            return Err(io_error(error, &shown));
        }
        quota.release_bytes(old_len.saturating_sub(body.len() as u64));
        set_mode(&dir, &relative, &shown, query.mode)?;
        stat(&dir, &relative, &shown)
    })
    .await??;
    Ok((StatusCode::CREATED, Json(stat)).into_response())
}

/// `GET /volumecontent/{id}/dir?path=&depth=`: the directory's entries, `depth` levels deep (1 by
/// default), at most [`MAX_LISTED`].
pub async fn list_dir(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathId(id): PathId,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<Value>>, ApiError> {
    let query = query(raw.as_deref())?;
    let (dir, _) = volume_dir(&state, &headers, &id)?;
    let (relative, shown) = relative(query.path.as_deref())?;
    let depth = query.depth.unwrap_or(1);
    let entries = blocking(move || {
        let meta = dir.metadata(&relative).map_err(|e| io_error(e, &shown))?;
        if !meta.is_dir() {
            return Err(ApiError::bad_request(format!("{shown} is not a directory")));
        }
        let mut out = Vec::new();
        walk(&dir, &relative, &shown, depth, &mut out)?;
        Ok(out)
    })
    .await??;
    Ok(Json(entries))
}

fn walk(
    dir: &Dir,
    relative: &Path,
    shown: &str,
    depth: u32,
    out: &mut Vec<Value>,
) -> Result<(), ApiError> {
    let mut names: Vec<String> = dir
        .read_dir(relative)
        .map_err(|e| io_error(e, shown))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        if out.len() >= MAX_LISTED {
            return Ok(());
        }
        let child = relative.join(&name);
        let child_shown = format!("{}/{name}", shown.trim_end_matches('/'));
        let Ok(meta) = dir.symlink_metadata(&child) else {
            continue;
        };
        out.push(stat_json(dir, &child, &child_shown, &meta));
        if depth > 1 && meta.is_dir() {
            walk(dir, &child, &child_shown, depth - 1, out)?;
        }
    }
    Ok(())
}

/// `POST /volumecontent/{id}/dir?path=&mode=&force=`: makes the directory; `force` makes its parents too
/// and accepts one that exists. 201 with its stat.
pub async fn make_dir(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathId(id): PathId,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = query(raw.as_deref())?;
    let (dir, _) = volume_dir(&state, &headers, &id)?;
    let quota = state.manager().volumes().quota(&id)?;
    let (relative, shown) = relative(query.path.as_deref())?;
    let stat = blocking(move || {
        let exists = dir.symlink_metadata(&relative).is_ok();
        if exists && !query.force {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("{shown} already exists"),
            ));
        }
        if !exists {
            quota.reserve_file().map_err(|_| {
                ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "the volume's quota has no room for another directory",
                )
            })?;
            let made = if query.force {
                dir.create_dir_all(&relative)
            } else {
                dir.create_dir(&relative)
            };
            if let Err(error) = made {
                quota.release_file();
                return Err(io_error(error, &shown));
            }
        }
        set_mode(&dir, &relative, &shown, query.mode)?;
        stat(&dir, &relative, &shown)
    })
    .await??;
    Ok((StatusCode::CREATED, Json(stat)).into_response())
}

/// `GET /volumecontent/{id}/path?path=`: the entry's stat.
pub async fn stat_path(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathId(id): PathId,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let query = query(raw.as_deref())?;
    let (dir, _) = volume_dir(&state, &headers, &id)?;
    let (relative, shown) = relative(query.path.as_deref())?;
    Ok(Json(
        blocking(move || stat(&dir, &relative, &shown)).await??,
    ))
}

/// `DELETE /volumecontent/{id}/path?path=`: removes a file, a symlink or a directory with all in it; 204.
pub async fn remove(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathId(id): PathId,
    RawQuery(raw): RawQuery,
) -> Result<StatusCode, ApiError> {
    let query = query(raw.as_deref())?;
    let (dir, host) = volume_dir(&state, &headers, &id)?;
    let quota = state.manager().volumes().quota(&id)?;
    let (relative, shown) = relative(query.path.as_deref())?;
    if relative == Path::new(".") {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the volume's root cannot be removed; destroy the volume instead",
        ));
    }
    blocking(move || {
        let meta = dir
            .symlink_metadata(&relative)
            .map_err(|e| io_error(e, &shown))?;
        // What leaves the quota: every file and byte under it (counted before, as a tree is removed).
        let (bytes, files) = if meta.is_dir() {
            let below = crate::sampler::disk_usage(&host.join(&relative));
            (below, count_entries(&dir, &relative) + 1)
        } else {
            (if meta.is_file() { meta.len() } else { 0 }, 1)
        };
        if meta.is_dir() {
            dir.remove_dir_all(&relative)
        } else {
            dir.remove_file(&relative)
        }
        .map_err(|e| io_error(e, &shown))?;
        quota.release_bytes(bytes);
        for _ in 0..files {
            quota.release_file();
        }
        Ok::<_, ApiError>(())
    })
    .await??;
    Ok(StatusCode::NO_CONTENT)
}

fn count_entries(dir: &Dir, relative: &Path) -> u64 {
    let mut count = 0;
    let mut stack = vec![relative.to_path_buf()];
    while let Some(next) = stack.pop() {
        let Ok(listing) = dir.read_dir(&next) else {
            continue;
        };
        for entry in listing.flatten() {
            count += 1;
            let child = next.join(entry.file_name());
            if dir.symlink_metadata(&child).is_ok_and(|m| m.is_dir()) {
                stack.push(child);
            }
        }
    }
    count
}

/// Body of `PATCH /volumecontent/{id}/path`.
#[derive(Debug, Default, Deserialize)]
pub struct PatchBody {
    /// New mode bits.
    pub mode: Option<u32>,
    /// Refused: files belong to the volume.
    pub uid: Option<u32>,
    /// Refused: files belong to the volume.
    pub gid: Option<u32>,
}

/// `PATCH /volumecontent/{id}/path?path= {"mode"?}`: changes the entry's mode; 200 with its stat.
pub async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathId(id): PathId,
    RawQuery(raw): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let query = query(raw.as_deref())?;
    let (dir, _) = volume_dir(&state, &headers, &id)?;
    let (relative, shown) = relative(query.path.as_deref())?;
    let body: PatchBody = json_body(body)?;
    if body.uid.is_some() || body.gid.is_some() {
        return Err(uid_gid());
    }
    if body.mode.is_some_and(|m| m > 0o7777) {
        return Err(ApiError::bad_request("mode must be at most 0o7777"));
    }
    Ok(Json(
        blocking(move || {
            set_mode(&dir, &relative, &shown, body.mode)?;
            stat(&dir, &relative, &shown)
        })
        .await??,
    ))
}
