//! The envd plane (sdk-compat.md §3): what the SDKs call on the sandbox's own origin — processes, files
//! and the filesystem service. Every call names its sandbox by header and carries its access token
//! ([`crate::auth::envd_sandbox`]); work on a paused sandbox fails with a clear error unless the
//! sandbox's policy resumes it automatically.

pub mod files;
pub mod filesystem;
pub mod process;

use std::path::PathBuf;

use cap_std::fs::Dir;
use stasis::lifecycle::LifecycleError;

use crate::api::blocking;
use crate::connect::{Code, ConnectError};
use crate::error::ApiError;
use crate::state::AppState;

/// A guest path (`/tmp/x`, or relative to `/`) as a path relative to the sandbox directory, and the
/// absolute guest path to report back. Nothing here makes it safe: [`with_root`] hands out a capability
/// on the sandbox directory, and cap-std refuses any path (`..`, absolute symlinks) that leaves it.
pub fn guest_path(path: &str) -> (PathBuf, String) {
    let trimmed = path.trim_start_matches('/');
    let relative = if trimmed.is_empty() {
        PathBuf::from(".")
    } else {
        PathBuf::from(trimmed)
    };
    (relative, format!("/{}", trimmed.trim_end_matches('/')))
}

/// Runs `work` on a capability for sandbox `id`'s directory (the guest's `/`), off the async workers and
/// under the sandbox's lock, so a pause cannot archive the directory half-way through a write.
pub async fn with_root<R: Send + 'static>(
    state: &AppState,
    id: String,
    work: impl FnOnce(&Dir) -> Result<R, ConnectError> + Send + 'static,
) -> Result<R, ConnectError> {
    let manager = state.manager().clone();
    let outcome = blocking(move || {
        manager.with_sandbox(&id, |sandbox| {
            let root = Dir::open_ambient_dir(sandbox.dir(), cap_std::ambient_authority())
                .map_err(|e| ConnectError::from(ApiError::internal(&e)))?;
            work(&root)
        })
    })
    .await
    .map_err(ConnectError::from)?;
    outcome.map_err(lifecycle_error)?
}

/// A lifecycle failure as envd reports it: a paused sandbox is a failed precondition that says how to
/// get out of it.
pub fn lifecycle_error(error: LifecycleError) -> ConnectError {
    match error {
        LifecycleError::Paused(id) => ConnectError::new(
            Code::FailedPrecondition,
            format!("sandbox {id} is paused; connect to it to resume it"),
        ),
        other => ConnectError::from(ApiError::from(other)),
    }
}

/// A filesystem failure on `path` as a Connect error: missing is `not_found`, existing is
/// `already_exists`, a path leaving the sandbox or not permitted is `permission_denied`.
pub fn io_error(error: std::io::Error, path: &str) -> ConnectError {
    use std::io::ErrorKind as K;
    let code = match error.kind() {
        K::NotFound => Code::NotFound,
        K::AlreadyExists => Code::AlreadyExists,
        K::PermissionDenied => Code::PermissionDenied,
        K::InvalidInput | K::NotADirectory | K::IsADirectory | K::DirectoryNotEmpty => {
            Code::InvalidArgument
        }
        K::StorageFull | K::QuotaExceeded | K::FileTooLarge => Code::ResourceExhausted,
        _ => return ConnectError::from(ApiError::internal(&error)),
    };
    let message = match code {
        Code::NotFound => format!("path not found: {path}"),
        Code::AlreadyExists => format!("path already exists: {path}"),
        // cap-std reports a path that would leave the sandbox as "a path led outside of the filesystem".
        _ => format!("{path}: {error}"),
    };
    ConnectError::new(code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_paths_are_relative_to_the_root() {
        assert_eq!(
            guest_path("/tmp/a.txt"),
            ("tmp/a.txt".into(), "/tmp/a.txt".into())
        );
        assert_eq!(guest_path("tmp/"), ("tmp/".into(), "/tmp".into()));
        assert_eq!(guest_path("/"), (".".into(), "/".into()));
        assert_eq!(guest_path(""), (".".into(), "/".into()));
    }
}
