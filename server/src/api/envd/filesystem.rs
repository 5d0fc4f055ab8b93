//! `filesystem.Filesystem` (unary Connect JSON): `ListDir`, `Stat`, `MakeDir`, `Remove`, `Move`, answered
//! with envd's `EntryInfo` shape.

use std::path::Path;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use cap_std::fs::{Dir, Metadata, PermissionsExt};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{SandboxFs, io_error, with_fs};
use crate::auth::envd_sandbox;
use crate::connect::{self, Code, ConnectError};
use crate::error::ApiError;
use crate::state::AppState;
use crate::time::rfc3339;

/// Deepest listing `ListDir` walks, whatever the request asks, so one call stays bounded.
pub const MAX_DEPTH: u32 = 16;

/// Body of the calls on one path.
#[derive(Debug, Default, Deserialize)]
pub struct PathRequest {
    /// The guest path.
    #[serde(default)]
    pub path: String,
    /// `ListDir` only: how many levels (1 = the directory's own entries).
    pub depth: Option<u32>,
}

/// Body of `Move`.
#[derive(Debug, Default, Deserialize)]
pub struct MoveRequest {
    /// The path to move.
    #[serde(default)]
    pub source: String,
    /// Where to.
    #[serde(default)]
    pub destination: String,
}

/// Authenticates the call, decodes its body and runs `work` on the sandbox's root.
async fn call<T, R>(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    work: impl FnOnce(&SandboxFs, T) -> Result<R, ConnectError> + Send + 'static,
) -> Result<R, ConnectError>
where
    T: DeserializeOwned + Send + 'static,
    R: Send + 'static,
{
    let id = envd_sandbox(state, headers)?;
    let body = body.map_err(|r| ConnectError::from(ApiError::new(r.status(), r.body_text())))?;
    let request: T = connect::decode(headers, &body)?;
    with_fs(state, id, move |fs| work(fs, request)).await
}

/// `EntryInfo` of `shown` (an absolute guest path), from its metadata (not following a final symlink).
pub fn entry(root: &Dir, relative: &Path, shown: &str, meta: &Metadata) -> Value {
    let kind = if meta.is_symlink() {
        "FILE_TYPE_SYMLINK"
    } else if meta.is_dir() {
        "FILE_TYPE_DIRECTORY"
    } else {
        "FILE_TYPE_FILE"
    };
    let mode = meta.permissions().mode();
    let name = Path::new(shown)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".to_owned());
    let modified = meta
        .modified()
        .map(|t| rfc3339(t.into_std()))
        .unwrap_or_else(|_| rfc3339(std::time::UNIX_EPOCH));
    let mut info = json!({
        "name": name,
        "type": kind,
        "path": shown,
        "size": meta.len(),
        "mode": mode & 0o7777,
        "permissions": permissions(mode, kind),
        "owner": "user",
        "group": "user",
        "modifiedTime": modified,
    });
    if meta.is_symlink()
        && let Ok(target) = root.read_link(relative)
    {
        info["symlinkTarget"] = json!(target.to_string_lossy());
    }
    info
}

/// `drwxr-xr-x`-style text of a mode.
fn permissions(mode: u32, kind: &str) -> String {
    let mut text = String::with_capacity(10);
    text.push(match kind {
        "FILE_TYPE_DIRECTORY" => 'd',
        "FILE_TYPE_SYMLINK" => 'l',
        _ => '-',
    });
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 0o7;
        text.push(if bits & 4 != 0 { 'r' } else { '-' });
        text.push(if bits & 2 != 0 { 'w' } else { '-' });
        text.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    text
}

fn stat(fs: &SandboxFs, path: &str) -> Result<Value, ConnectError> {
    let place = fs.place(path)?;
    let meta = place
        .dir
        .symlink_metadata(&place.relative)
        .map_err(|e| io_error(e, &place.shown))?;
    Ok(entry(&place.dir, &place.relative, &place.shown, &meta))
}

/// `POST /filesystem.Filesystem/Stat`: `{entry}`; `not_found` when missing.
pub async fn stat_handler(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ConnectError> {
    call(&state, &headers, body, |fs, request: PathRequest| {
        Ok(json!({ "entry": stat(fs, &request.path)? }))
    })
    .await
    .map(Json)
}

/// `POST /filesystem.Filesystem/ListDir`: `{entries}`, `depth` levels deep (1 by default).
pub async fn list_dir(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ConnectError> {
    call(&state, &headers, body, |fs, request: PathRequest| {
        let depth = request.depth.unwrap_or(1).clamp(1, MAX_DEPTH);
        let place = fs.place(&request.path)?;
        let (root, relative, shown) = (&place.dir, &place.relative, &place.shown);
        let meta = root.metadata(relative).map_err(|e| io_error(e, shown))?;
        if !meta.is_dir() {
            return Err(ConnectError::new(
                Code::InvalidArgument,
                format!("{shown} is not a directory"),
            ));
        }
        let mut entries = Vec::new();
        walk(root, relative, shown, depth, &mut entries)?;
        Ok(json!({ "entries": entries }))
    })
    .await
    .map(Json)
}

/// Appends the entries of directory `relative` (shown as `shown`), sorted by name, descending into
/// subdirectories (not into symlinks) while `depth` allows.
fn walk(
    root: &Dir,
    relative: &Path,
    shown: &str,
    depth: u32,
    out: &mut Vec<Value>,
) -> Result<(), ConnectError> {
    let mut names: Vec<String> = root
        .read_dir(relative)
        .map_err(|e| io_error(e, shown))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let child = relative.join(&name);
        let child_shown = format!("{}/{name}", shown.trim_end_matches('/'));
        let Ok(meta) = root.symlink_metadata(&child) else {
            continue; // removed meanwhile
        };
        out.push(entry(root, &child, &child_shown, &meta));
        if depth > 1 && meta.is_dir() {
            walk(root, &child, &child_shown, depth - 1, out)?;
        }
    }
    Ok(())
}

/// `POST /filesystem.Filesystem/MakeDir`: creates it and its parents; `already_exists` if it exists.
pub async fn make_dir(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ConnectError> {
    call(&state, &headers, body, |fs, request: PathRequest| {
        let place = fs.place(&request.path)?;
        let (root, relative, shown) = (&place.dir, &place.relative, &place.shown);
        if root.symlink_metadata(relative).is_ok() {
            return Err(ConnectError::new(
                Code::AlreadyExists,
                format!("path already exists: {shown}"),
            ));
        }
        root.create_dir_all(relative)
            .map_err(|e| io_error(e, shown))?;
        Ok(json!({ "entry": stat(fs, &request.path)? }))
    })
    .await
    .map(Json)
}

/// `POST /filesystem.Filesystem/Remove`: a file, a symlink, or a directory with everything in it.
pub async fn remove(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ConnectError> {
    call(&state, &headers, body, |fs, request: PathRequest| {
        let place = fs.place(&request.path)?;
        let (root, relative, shown) = (&place.dir, &place.relative, &place.shown);
        if relative == Path::new(".") {
            return Err(ConnectError::new(
                Code::PermissionDenied,
                if place.area == 0 {
                    "the sandbox's root cannot be removed".to_owned()
                } else {
                    format!("{shown} is a volume's mount point; it cannot be removed")
                },
            ));
        }
        let meta = root
            .symlink_metadata(relative)
            .map_err(|e| io_error(e, shown))?;
        if meta.is_dir() {
            root.remove_dir_all(relative)
        } else {
            root.remove_file(relative)
        }
        .map_err(|e| io_error(e, shown))?;
        Ok(json!({}))
    })
    .await
    .map(Json)
}

/// `POST /filesystem.Filesystem/Move`: renames `source` to `destination`; `{entry}` of the destination.
pub async fn move_handler(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ConnectError> {
    call(&state, &headers, body, |fs, request: MoveRequest| {
        let from = fs.place(&request.source)?;
        let to = fs.place(&request.destination)?;
        let shown = format!("{} -> {}", from.shown, to.shown);
        if from.area != to.area {
            return Err(ConnectError::new(
                Code::InvalidArgument,
                format!("{shown}: a path cannot be moved into or out of a volume"),
            ));
        }
        from.dir
            .rename(&from.relative, &to.dir, &to.relative)
            .map_err(|e| io_error(e, &shown))?;
        Ok(json!({ "entry": stat(fs, &request.destination)? }))
    })
    .await
    .map(Json)
}

#[cfg(test)]
mod tests {
    use super::permissions;

    #[test]
    fn modes_print_like_ls() {
        assert_eq!(permissions(0o755, "FILE_TYPE_DIRECTORY"), "drwxr-xr-x");
        assert_eq!(permissions(0o640, "FILE_TYPE_FILE"), "-rw-r-----");
    }
}
