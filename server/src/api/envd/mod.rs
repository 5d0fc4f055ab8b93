//! The envd plane (sdk-compat.md §3): what the SDKs call on the sandbox's own origin — processes, files
//! and the filesystem service. Every call names its sandbox by header and carries its access token
//! ([`crate::auth::envd_sandbox`]); work on a paused sandbox fails with a clear error unless the
//! sandbox's policy resumes it automatically.

pub mod files;
pub mod filesystem;
pub mod process;
pub mod watch;

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

/// A sandbox's filesystem as its guest sees it: its root, with its volumes mounted over it. Guest paths
/// are found in the root or in the volume whose mount path is their longest prefix, as wasi-libc
/// resolves them against the preopens.
pub struct SandboxFs {
    root: Dir,
    /// Each mount's guest path and host directory.
    mounts: Vec<(String, PathBuf)>,
}

/// Where one guest path lies.
pub struct Place {
    /// A capability on the directory it lies under (the root, or a volume's).
    pub dir: Dir,
    /// The path relative to `dir`.
    pub relative: PathBuf,
    /// The absolute guest path, to report back.
    pub shown: String,
    /// Which directory: 0 for the root, `i + 1` for the `i`th mount (paths in different ones cannot be
    /// renamed into each other).
    pub area: usize,
}

impl SandboxFs {
    /// The filesystem of `sandbox`.
    pub fn of(sandbox: &stasis::Sandbox) -> Result<Self, ConnectError> {
        let root = Dir::open_ambient_dir(sandbox.dir(), cap_std::ambient_authority())
            .map_err(|e| ConnectError::from(ApiError::internal(&e)))?;
        let mounts = sandbox
            .mounts()
            .iter()
            .map(|m| (m.guest.clone(), m.host.clone()))
            .collect();
        Ok(Self { root, mounts })
    }

    /// Where guest path `path` lies.
    pub fn place(&self, path: &str) -> Result<Place, ConnectError> {
        let (relative, shown) = guest_path(path);
        let mount = self
            .mounts
            .iter()
            .enumerate()
            .filter(|(_, (guest, _))| {
                shown == *guest
                    || shown
                        .strip_prefix(guest.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .max_by_key(|(_, (guest, _))| guest.len());
        let internal = |e: std::io::Error| ConnectError::from(ApiError::internal(&e));
        Ok(match mount {
            None => Place {
                dir: self.root.try_clone().map_err(internal)?,
                relative,
                shown,
                area: 0,
            },
            Some((index, (guest, host))) => {
                let rest = shown[guest.len()..].trim_start_matches('/');
                Place {
                    dir: Dir::open_ambient_dir(host, cap_std::ambient_authority())
                        .map_err(internal)?,
                    relative: if rest.is_empty() {
                        PathBuf::from(".")
                    } else {
                        PathBuf::from(rest)
                    },
                    shown,
                    area: index + 1,
                }
            }
        })
    }
}

/// Runs `work` on sandbox `id`'s filesystem (its root and mounted volumes), off the async workers and
/// under the sandbox's lock, so a pause cannot archive the directory half-way through a write.
pub async fn with_fs<R: Send + 'static>(
    state: &AppState,
    id: String,
    work: impl FnOnce(&SandboxFs) -> Result<R, ConnectError> + Send + 'static,
) -> Result<R, ConnectError> {
    let manager = state.manager().clone();
    let outcome =
        blocking(move || manager.with_sandbox(&id, |sandbox| work(&SandboxFs::of(sandbox)?)))
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
