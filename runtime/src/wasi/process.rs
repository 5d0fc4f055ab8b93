//! The host interface through which a guest starts and manages other processes of its sandbox — the
//! `stasis` import module ([`MODULE`]) — and what this WASI host asks of the sandbox to do it
//! ([`ProcessHost`], implemented by [`crate::kernel`]).
//!
//! The imports, all returning an errno (0 on success):
//!
//! | import | signature | what it does |
//! |---|---|---|
//! | `pipe` | `(fds_out) -> errno` | a new pipe; its read and write fds are written as two `u32` at `fds_out` |
//! | `proc_spawn` | `(req, req_len, pid_out) -> errno` | starts a program (the request is JSON, [`SpawnRequest`]); `ENOENT` when no program has the name, `EAGAIN` past the sandbox's process limit |
//! | `proc_wait` | `(pid, flags, pid_out, status_out) -> errno` | waits for child `pid` (or any child, `pid` = -1) to end and reaps it; [`WAIT_NOHANG`] answers `EAGAIN` at once instead of waiting; `ECHILD` when there is nothing to wait for |
//! | `proc_kill` | `(pid, signal) -> errno` | stops process `pid` with `signal` (its status is 128 + signal); `ESRCH` when no such process is alive |
//!
//! Every `stasis` import is an unwind point of the instrumentation ([`crate::instrument`]): a pause may
//! suspend a process in any of them, and `proc_wait` unwinds while it waits.

use serde::Deserialize;

use super::ctx::FdEntry;
use super::errno::Errno;
use super::pipe::Wake;

/// Name of the import module.
pub const MODULE: &str = "stasis";

/// Names of the imports of [`MODULE`], which templates may import.
pub const IMPORTS: &[&str] = &["pipe", "proc_spawn", "proc_wait", "proc_kill"];

/// `proc_wait` flag: do not wait; answer `EAGAIN` when no child has ended yet.
pub const WAIT_NOHANG: u32 = 1;

/// Largest spawn request a guest may pass, in bytes.
pub const MAX_SPAWN_REQUEST: u32 = 1 << 20;

/// What a guest asks `proc_spawn` for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnRequest {
    /// The program's name, as looked up among the sandbox's programs (`python3`, `node`, a template).
    pub program: String,
    /// Its argv, `args[0]` being the name it was called by.
    pub args: Vec<String>,
    /// Its whole environment.
    pub env: Vec<(String, String)>,
    /// Its working directory (given to it as `PWD`); the parent's `PWD` when absent.
    #[serde(default)]
    pub cwd: Option<String>,
    /// The parent's fd that becomes the child's stdin; `None` for an empty one.
    pub stdin: Option<u32>,
    /// The parent's fd that becomes the child's stdout; `None` to discard it.
    pub stdout: Option<u32>,
    /// The parent's fd that becomes the child's stderr; `None` to discard it.
    pub stderr: Option<u32>,
}

/// What a child's fds 0–2 are: duplicates of fds of its parent (`None`: the default empty stdin or
/// discarding sink).
pub(crate) type ChildStdio = [Option<FdEntry>; 3];

/// A child that ended, as `proc_wait` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    /// Its pid.
    pub pid: u32,
    /// Its exit status: its own code, or 128 + the signal that stopped it.
    pub status: i32,
}

/// What the WASI host needs of a sandbox to run processes: implemented by the sandbox's kernel
/// ([`crate::kernel::Kernel`]), shared by all its processes.
pub(crate) trait ProcessHost: Send + Sync {
    /// Starts `request` as a child of `parent` with `stdio`; its pid.
    fn spawn(&self, parent: u32, request: SpawnRequest, stdio: ChildStdio) -> Result<u32, Errno>;

    /// Reaps an ended child of `parent` (`pid`, or any with `None`); with `block`, waits for one until
    /// `wake` gives a reason to stop.
    fn wait(
        &self,
        parent: u32,
        pid: Option<u32>,
        block: bool,
        wake: &dyn Fn() -> Option<Wake>,
    ) -> Result<Result<Reaped, Wake>, Errno>;

    /// Stops process `pid` with `signal`.
    fn kill(&self, pid: u32, signal: u32) -> Result<(), Errno>;
}
