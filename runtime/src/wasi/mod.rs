//! Stasis's own `wasi_snapshot_preview1` host, whose whole state is plain serde data that can be saved with a
//! paused sandbox and put back, at the same fd numbers, when it resumes.
//!
//! `wasmtime_wasi::p1` keeps its fd table private, so open files could not be enumerated or restored; this host
//! keeps per fd what is needed to re-open it: its kind, the preopen it hangs from and its path relative to it,
//! open and fd flags, rights, offset and readdir cookie ([`WasiState`]). Behaviour follows wasmtime-wasi's
//! preview1 where practical (errno choices, rights reported by `fd_fdstat_get`, the `dirent` layout with "." and
//! ".." first and cookies counting entries); the differential tests in `tests/all/wasi.rs` compare the two.
//!
//! Choices worth knowing:
//! - **Paths** are resolved only through `cap_std::fs::Dir`, so `..`, absolute symlinks and symlinks pointing
//!   outside a preopen cannot escape it (`EPERM`, as wasmtime-wasi answers); symlink loops are `ELOOP`.
//! - **Read-only mounts** answer `EPERM` to every write or create, like wasmtime-wasi's directory permissions
//!   (it does not use `EROFS`).
//! - **Offsets** are kept by the host and every read and write is positional, so a saved offset is exact;
//!   `APPEND` writes go to the current end of the file.
//! - **Save refuses a file deleted (or replaced) while open**: [`WasiCtx::save`] compares the open handle's
//!   (device, inode) with what its path names now and fails with [`WasiSaveError::FileGone`] naming the fd and
//!   path, because such a file could not be re-opened by path on restore.
//! - **Directories are listed in name order**, so readdir cookies keep meaning the same entry after a restore
//!   onto a re-extracted file tree (wasmtime-wasi uses the host's order); `d_ino` is the host inode number.
//! - **Clocks**: the monotonic clock is virtual and continues from its saved value; realtime is the host's;
//!   the CPU-time clocks answer `EBADF` as in wasmtime-wasi.
//! - **Stdio across a restore**: the restored context reads stdin from the [`WasiConfig`] it is given (what
//!   the guest reads next) and captures output afresh; stdio fds keep their numbers, renumbered or closed.
//! - **The guest's cwd** lives in wasi-libc's memory, so the memory snapshot carries it, not this state.
//! - **Bounds on guest input**: at most [`memory::MAX_IOVECS`] iovecs, 4096 `poll_oneoff` subscriptions,
//!   `max_path_len` bytes of path; buffers are checked against memory before use and filled in place, so
//!   no guest length sizes a host allocation. Out-of-bounds pointers are `EFAULT` (wasmtime-wasi traps),
//!   invalid enum values `EINVAL` (wasmtime-wasi traps).
//! - **Preopens**: a sandbox's root is "/" at fd 3 and mounts follow; a config without a root
//!   ([`WasiConfig::without_root`], what `stasis run` uses) gives exactly its mounts from fd 3, as `wasmtime run`
//!   does with its `--dir`s.
//! - **Trailing slashes**: `path_remove_directory("dir/")` removes `dir` (POSIX rmdir; wasmtime-wasi answers
//!   `EINVAL`, failing the WASI testsuite's `remove_directory_trailing_slashes`); `path_link` with
//!   `SYMLINK_FOLLOW` is `EINVAL`, as in wasmtime-wasi.
//! - **Not like wasmtime-wasi**: `fd_allocate` grows files (within the quota) where wasmtime-wasi answers
//!   `ENOTSUP`.
//! - **Sockets** are fds too ([`socket`]): TCP over the sandbox's virtual network ([`crate::net`]), through
//!   preview 1's socket calls and the WasmEdge socket extension; listening binds no host port, and
//!   outbound connections follow the sandbox's egress policy.

mod clocks;
mod ctx;
pub mod errno;
mod imports;
mod interrupt;
pub mod memory;
pub(crate) mod pipe;
pub mod process;
mod quota;
pub(crate) mod socket;
mod state;
mod stdio;
mod suspend;
pub mod types;

use std::path::PathBuf;
use std::sync::Arc;

pub use ctx::WasiCtx;
pub use errno::Errno;
pub use imports::add_to_linker;
pub(crate) use imports::{add_wasmedge_accept, wants_wasmedge_accept};
pub use interrupt::{Interrupt, StopReason, Stopped};
pub use quota::DiskQuota;
pub use state::{FdKindState, FdState, PreopenState, WasiState};
pub(crate) use state::{RestoreLinks, SaveLinks};
pub use stdio::{OutputCallback, OutputSink, PipeError, Stdin, StdinPipe};
pub(crate) use suspend::{Entry as SuspendEntry, enter as suspend_enter, unwind as suspend_unwind};
pub use suspend::{PendingCall, UnwindGlobals};

/// Name of the module whose imports this host provides.
pub const MODULE: &str = "wasi_snapshot_preview1";

/// Everything a [`WasiCtx`] is built from: arguments, environment, the directories it may see, its stdio and
/// its limits.
#[derive(Debug)]
pub struct WasiConfig {
    /// Program arguments, `args[0]` being the program name.
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// The sandbox's host directory, preopened as "/" at fd 3 and the only place the disk quota counts.
    /// `None` (as `stasis run` has it, like `wasmtime run`) preopens only the mounts, from fd 3.
    pub root: Option<PathBuf>,
    /// Extra preopens after the root (fds 4, 5, … with a root, 3, 4, … without), in this order.
    pub mounts: Vec<Mount>,
    /// Standard input.
    pub stdin: Stdin,
    /// Standard output.
    pub stdout: OutputSink,
    /// Standard error.
    pub stderr: OutputSink,
    /// Resource limits.
    pub limits: WasiLimits,
}

impl WasiConfig {
    /// A configuration with the given root, no arguments or environment, empty stdin, stdout and stderr each
    /// captured up to 1 MiB, and default limits.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: Some(root.into()),
            ..Self::without_root()
        }
    }

    /// Like [`WasiConfig::new`] but with no root: the guest sees only [`WasiConfig::mounts`], from fd 3.
    pub fn without_root() -> Self {
        Self {
            args: Vec::new(),
            env: Vec::new(),
            root: None,
            mounts: Vec::new(),
            stdin: Stdin::Empty,
            stdout: OutputSink::capture(1 << 20),
            stderr: OutputSink::capture(1 << 20),
            limits: WasiLimits::default(),
        }
    }
}

/// An extra host directory visible to the guest.
#[derive(Clone, Debug)]
pub struct Mount {
    /// The host directory.
    pub host: PathBuf,
    /// The name the guest sees it under (e.g. "/data").
    pub guest: String,
    /// Refuse every write, create and removal under it (`EPERM`).
    pub read_only: bool,
    /// The disk quota of the directory, shared by everyone writing into it (a volume mounted into several
    /// sandboxes has one); `None` counts nothing.
    pub quota: Option<Arc<DiskQuota>>,
}

/// Mounts are equal when they show the same directory the same way under the same quota.
impl PartialEq for Mount {
    fn eq(&self, other: &Self) -> bool {
        self.host == other.host
            && self.guest == other.guest
            && self.read_only == other.read_only
            && match (&self.quota, &other.quota) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl Eq for Mount {}

/// Resource limits of one [`WasiCtx`].
#[derive(Clone, Debug)]
pub struct WasiLimits {
    /// Most fds open at once, stdio and preopens included; opening more is `EMFILE`.
    pub max_open_fds: usize,
    /// Longest path (in bytes) a guest may pass; longer is `ENAMETOOLONG`.
    pub max_path_len: usize,
    /// Disk quota of the sandbox root (not of extra mounts), shared by every context of a sandbox.
    pub disk_quota: Option<Arc<DiskQuota>>,
}

impl Default for WasiLimits {
    fn default() -> Self {
        Self {
            max_open_fds: 1024,
            max_path_len: 4096,
            disk_quota: None,
        }
    }
}

/// The error `proc_exit` traps with; downcast it from the `wasmtime::Error` a call returns to get the code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("guest exited with code {0}")]
pub struct ProcExit(pub i32);

/// Why [`WasiCtx::new`] failed.
#[derive(Debug, thiserror::Error)]
pub enum WasiSetupError {
    /// A preopened directory could not be opened.
    #[error("cannot open preopened directory {path}")]
    OpenPreopen {
        /// The host path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The disk usage of the root could not be scanned.
    #[error("cannot scan the disk usage of {path}")]
    ScanQuota {
        /// The host path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The preopens alone exceed `max_open_fds`.
    #[error("{needed} fds are needed for stdio and preopens but max_open_fds is {max}")]
    TooManyPreopens {
        /// Fds needed.
        needed: usize,
        /// The limit.
        max: usize,
    },
}

/// Why [`WasiCtx::save`] refused to save.
#[derive(Debug, thiserror::Error)]
pub enum WasiSaveError {
    /// An open file or directory no longer exists at its path (deleted, or replaced by another file), so it
    /// could not be re-opened on restore.
    #[error("fd {fd} ({path}) was deleted or replaced while open and cannot be saved")]
    FileGone {
        /// The guest fd.
        fd: u32,
        /// Its path relative to its preopen.
        path: String,
    },
    /// The metadata of an open fd could not be read.
    #[error("cannot read the metadata of fd {fd} ({path})")]
    Metadata {
        /// The guest fd.
        fd: u32,
        /// Its path relative to its preopen.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Why [`WasiCtx::restore`] failed.
#[derive(Debug, thiserror::Error)]
pub enum WasiRestoreError {
    /// Setting up the preopens from the configuration failed.
    #[error("setting up the restored context")]
    Setup(#[from] WasiSetupError),
    /// The configuration's preopens are not those of the saved state.
    #[error("the saved state has preopens {saved:?} but the configuration gives {configured:?}")]
    PreopenMismatch {
        /// Guest names of the saved preopens.
        saved: Vec<String>,
        /// Guest names of the configured preopens.
        configured: Vec<String>,
    },
    /// A saved fd hangs from a preopen that does not exist.
    #[error("fd {fd} refers to preopen #{preopen}, which does not exist")]
    UnknownPreopen {
        /// The guest fd.
        fd: u32,
        /// The preopen index.
        preopen: u32,
    },
    /// A saved fd could not be re-opened.
    #[error("cannot re-open fd {fd} ({path})")]
    Reopen {
        /// The guest fd.
        fd: u32,
        /// Its path relative to its preopen.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The saved state has more fds than the configuration's `max_open_fds`.
    #[error("the saved state has {count} fds but max_open_fds is {max}")]
    TooManyFds {
        /// Saved fds.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A saved fd is an end of a pipe the saved sandbox does not have.
    #[error("fd {fd} is an end of pipe {pipe}, which the saved sandbox does not have")]
    UnknownPipe {
        /// The guest fd.
        fd: u32,
        /// The pipe's saved id.
        pipe: u64,
    },
    /// A saved fd listens on a port the saved sandbox's network does not have.
    #[error(
        "fd {fd} listens on listener {listener}, which the saved sandbox's network does not have"
    )]
    UnknownListener {
        /// The guest fd.
        fd: u32,
        /// The listener's saved id.
        listener: u64,
    },
}
