//! The live fd table of a guest: open handles plus the plain data that describes each of them, stdio, the
//! virtual clock and the limits. Imports reach it through [`WasiCtx`]'s crate-private helpers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use cap_std::ambient_authority;
use cap_std::fs::Dir;

use super::clocks::VirtualClock;
use super::errno::{Errno, GuestResult};
use super::quota::DiskQuota;
use super::stdio::{OutputState, StdinState};
use super::types::rights;
use super::{WasiConfig, WasiLimits, WasiSetupError};

/// A process's standard input, shared with the children it hands it to.
pub(crate) type SharedStdin = Arc<Mutex<StdinState>>;
/// A process's stdout or stderr, shared with the children it hands it to.
pub(crate) type SharedOutput = Arc<Mutex<OutputState>>;

/// Locks a shared stream; a panic while it was held leaves bytes, never broken invariants, so a poisoned
/// lock is simply taken.
pub(crate) fn lock<T>(shared: &Mutex<T>) -> MutexGuard<'_, T> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// The open object behind an fd.
pub(crate) enum Handle {
    /// A standard input: this process's own, or its parent's that a spawn handed down.
    Stdin(SharedStdin),
    /// A standard output, likewise.
    Stdout(SharedOutput),
    /// A standard error, likewise.
    Stderr(SharedOutput),
    Dir(Dir),
    File(std::fs::File),
    /// One end of a pipe between processes of the sandbox.
    Pipe(super::pipe::PipeEnd),
    /// A socket of the sandbox's virtual network.
    Socket(super::socket::Socket),
}

/// One fd: its handle and the plain data needed to describe and re-open it.
pub(crate) struct FdEntry {
    pub handle: Handle,
    /// Index of the preopen this hangs from (0 is the root when there is one); `None` for stdio.
    pub preopen: Option<u32>,
    /// This fd is the preopen itself.
    pub is_preopen: bool,
    /// Path relative to the preopen ("" for the preopen itself).
    pub rel_path: String,
    /// `lookupflags` it was opened with (symlink following matters to re-open it).
    pub lookupflags: u32,
    pub oflags: u16,
    pub fdflags: u16,
    pub rights_base: u64,
    pub rights_inheriting: u64,
    pub read: bool,
    pub write: bool,
    pub offset: u64,
    /// Cookie the guest will most likely pass next to `fd_readdir` (recorded for inspection).
    pub readdir_cookie: u64,
}

/// A preopened directory.
pub(crate) struct Preopen {
    pub guest: String,
    pub host: PathBuf,
    pub read_only: bool,
    /// Whether this is the sandbox root, which `WasiLimits::disk_quota` counts.
    pub is_root: bool,
    /// The quota of a mount (see [`super::Mount::quota`]).
    pub quota: Option<Arc<DiskQuota>>,
    /// Handle on the preopen's directory, kept even when the guest closes its fd, to re-open paths on restore.
    pub dir: Dir,
}

/// The live WASI state of one guest instance. `Send + 'static`, so it can live in a `wasmtime::Store`.
pub struct WasiCtx {
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) fds: BTreeMap<u32, FdEntry>,
    pub(crate) preopens: Vec<Preopen>,
    /// The process's own standard streams (its fds 0–2 at the start; a child may share its parent's).
    pub(crate) stdin: SharedStdin,
    pub(crate) stdout: SharedOutput,
    pub(crate) stderr: SharedOutput,
    pub(crate) limits: WasiLimits,
    pub(crate) clock: VirtualClock,
    /// When the current call into the guest must end: a blocking import (a `poll_oneoff` sleep) waits no
    /// longer and traps instead, since the engine's CPU deadline only interrupts guest code, not the host.
    pub(crate) deadline: Option<Instant>,
    /// Lets another thread stop the guest while it is blocked in a host call (`None`: it cannot be).
    pub(crate) interrupt: Option<Arc<super::Interrupt>>,
    /// The unwind protocol's host side (see [`super::suspend`]).
    pub(crate) suspend: super::suspend::SuspendState,
    /// The process's id in its sandbox (what its children name as their parent).
    pub(crate) pid: u32,
    /// The sandbox's processes, for the `stasis` imports (`None`: `ENOSYS`).
    pub(crate) processes: Option<Arc<dyn super::process::ProcessHost>>,
    /// The sandbox's network, for the socket calls (`None` until given or first used).
    pub(crate) network: Option<crate::net::Network>,
}

impl std::fmt::Debug for WasiCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasiCtx")
            .field("args", &self.args)
            .field("fds", &self.fds.keys().collect::<Vec<_>>())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl WasiCtx {
    /// Builds a fresh context: stdio at fds 0–2, the root (if any) preopened as "/" at fd 3 and the mounts
    /// after it.
    pub fn new(config: WasiConfig) -> Result<Self, WasiSetupError> {
        let mut ctx = Self::without_fds(config, 0)?;
        let stdio = [
            Handle::Stdin(ctx.stdin.clone()),
            Handle::Stdout(ctx.stdout.clone()),
            Handle::Stderr(ctx.stderr.clone()),
        ];
        for (fd, handle) in (0..).zip(stdio) {
            ctx.fds.insert(fd, FdEntry::stdio(handle));
        }
        for i in 0..ctx.preopens.len() {
            let entry =
                ctx.preopen_entry(i as u32)
                    .map_err(|source| WasiSetupError::OpenPreopen {
                        path: ctx.preopens[i].host.clone(),
                        source,
                    })?;
            ctx.fds.insert(3 + i as u32, entry);
        }
        Ok(ctx)
    }

    /// Opens the preopens and stdio of `config` with an empty fd table and the clock at `clock_ns`.
    pub(crate) fn without_fds(config: WasiConfig, clock_ns: u64) -> Result<Self, WasiSetupError> {
        let needed = 3 + usize::from(config.root.is_some()) + config.mounts.len();
        if needed > config.limits.max_open_fds {
            return Err(WasiSetupError::TooManyPreopens {
                needed,
                max: config.limits.max_open_fds,
            });
        }
        let mut preopens = Vec::with_capacity(1 + config.mounts.len());
        let open = |path: &PathBuf| {
            Dir::open_ambient_dir(path, ambient_authority()).map_err(|source| {
                WasiSetupError::OpenPreopen {
                    path: path.clone(),
                    source,
                }
            })
        };
        if let Some(root) = &config.root {
            preopens.push(Preopen {
                guest: "/".into(),
                host: root.clone(),
                read_only: false,
                is_root: true,
                quota: None,
                dir: open(root)?,
            });
        }
        for m in &config.mounts {
            preopens.push(Preopen {
                guest: m.guest.clone(),
                host: m.host.clone(),
                read_only: m.read_only,
                is_root: false,
                quota: m.quota.clone(),
                dir: open(&m.host)?,
            });
            if let Some(quota) = &m.quota {
                quota
                    .ensure_scanned(&m.host)
                    .map_err(|source| WasiSetupError::ScanQuota {
                        path: m.host.clone(),
                        source,
                    })?;
            }
        }
        if let (Some(q), Some(root)) = (&config.limits.disk_quota, &config.root) {
            q.ensure_scanned(root)
                .map_err(|source| WasiSetupError::ScanQuota {
                    path: root.clone(),
                    source,
                })?;
        }
        Ok(Self {
            args: config.args,
            env: config.env,
            fds: BTreeMap::new(),
            preopens,
            stdin: Arc::new(Mutex::new(StdinState::new(config.stdin))),
            stdout: Arc::new(Mutex::new(OutputState::new(config.stdout))),
            stderr: Arc::new(Mutex::new(OutputState::new(config.stderr))),
            limits: config.limits,
            clock: VirtualClock::starting_at(clock_ns),
            deadline: None,
            interrupt: None,
            suspend: Default::default(),
            pid: 0,
            processes: None,
            network: None,
        })
    }

    /// Lets `interrupt` stop the guest: a host call that blocks (a sleep) returns early once it is
    /// triggered, and every host call traps with [`super::Stopped`] from then on.
    pub fn set_interrupt(&mut self, interrupt: Arc<super::Interrupt>) {
        self.interrupt = Some(interrupt);
    }

    /// Why the guest was asked to stop, if it was.
    pub(crate) fn stopped(&self) -> Option<super::StopReason> {
        self.interrupt.as_ref().and_then(|i| i.stopped())
    }

    /// Sleeps for `duration` of host time, returning early if the guest is asked to stop or (when its
    /// call may be suspended) to suspend.
    pub(crate) fn sleep(&self, duration: std::time::Duration) -> super::interrupt::Woken {
        match &self.interrupt {
            Some(interrupt) => interrupt.sleep(duration, self.suspendable()),
            None => {
                std::thread::sleep(duration);
                super::interrupt::Woken::Elapsed
            }
        }
    }

    /// Makes the context process `pid` of the sandbox whose processes `host` runs, for the `stasis`
    /// imports.
    pub(crate) fn set_process_host(
        &mut self,
        pid: u32,
        host: Arc<dyn super::process::ProcessHost>,
    ) {
        self.pid = pid;
        self.processes = Some(host);
    }

    /// Makes `entry` (a duplicate of a parent's fd) the process's fd `fd`, 0–2, before it starts. A stream
    /// handed down stays its owner's: this process writes to it or reads from it, but its own streams
    /// (what [`WasiCtx::take_stdout`] drains, what a saved state calls its own) are untouched.
    pub(crate) fn install_stdio(&mut self, fd: u32, entry: FdEntry) {
        self.fds.insert(fd, entry);
    }

    /// The host pipe behind fd 0 — the process's own stdin or one handed down to it — if it is one: what
    /// a stop or suspend request wakes.
    pub(crate) fn fd0_stdin_pipe(&self) -> Option<super::StdinPipe> {
        match &self.fds.get(&0)?.handle {
            Handle::Stdin(shared) => lock(shared).pipe().cloned(),
            _ => None,
        }
    }

    /// Every pipe an fd holds an end of, with the bytes buffered in it, into `out`, by id.
    pub(crate) fn pipes_into(&self, out: &mut BTreeMap<u64, Vec<u8>>) {
        for entry in self.fds.values() {
            if let Handle::Pipe(end) = &entry.handle {
                out.entry(end.id()).or_insert_with(|| end.buffered());
            }
        }
    }

    /// The interrupt that can stop or suspend the guest, if it has one.
    pub fn interrupt(&self) -> Option<&Arc<super::Interrupt>> {
        self.interrupt.as_ref()
    }

    /// The pipe stdin reads from, if it is one.
    pub fn stdin_pipe(&self) -> Option<super::StdinPipe> {
        lock(&self.stdin).pipe().cloned()
    }

    /// Gives the guest new standard streams (a resumed command's, from its new owner); fds keep their
    /// numbers, and children sharing the streams see the new ones too (they are replaced in place).
    pub fn replace_stdio(
        &mut self,
        stdin: super::Stdin,
        stdout: super::OutputSink,
        stderr: super::OutputSink,
    ) {
        lock(&self.stdin).replace(stdin);
        *lock(&self.stdout) = OutputState::new(stdout);
        *lock(&self.stderr) = OutputState::new(stderr);
    }

    /// The fd entry of preopen `index` (a fresh handle on its directory).
    pub(crate) fn preopen_entry(&self, index: u32) -> std::io::Result<FdEntry> {
        let p = self
            .preopens
            .get(index as usize)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
        Ok(FdEntry {
            handle: Handle::Dir(p.dir.try_clone()?),
            preopen: Some(index),
            is_preopen: true,
            rel_path: String::new(),
            lookupflags: 0,
            oflags: super::types::oflags::DIRECTORY,
            fdflags: 0,
            rights_base: rights::PREOPEN_BASE,
            rights_inheriting: rights::PREOPEN_INHERITING,
            read: true,
            write: false,
            offset: 0,
            readdir_cookie: 0,
        })
    }

    /// Sets the instant by which the current call into the guest must end (`None`: no bound, as for
    /// `stasis run`). A `poll_oneoff` that would sleep past it sleeps until it and then traps with
    /// [`wasmtime::Trap::Interrupt`], the trap of an exceeded CPU deadline, so a guest cannot hold its
    /// sandbox forever by sleeping in the host where epoch interruption does not reach.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// Drains the captured stdout.
    pub fn take_stdout(&mut self) -> Vec<u8> {
        lock(&self.stdout).take()
    }

    /// Drains the captured stderr.
    pub fn take_stderr(&mut self) -> Vec<u8> {
        lock(&self.stderr).take()
    }

    /// Whether stdout output was dropped because the capture buffer was full.
    pub fn stdout_truncated(&self) -> bool {
        lock(&self.stdout).truncated()
    }

    /// Whether stderr output was dropped because the capture buffer was full.
    pub fn stderr_truncated(&self) -> bool {
        lock(&self.stderr).truncated()
    }

    /// The fds currently open, in increasing order.
    pub fn open_fds(&self) -> Vec<u32> {
        self.fds.keys().copied().collect()
    }

    /// Current value of the virtual monotonic clock in nanoseconds.
    pub fn monotonic_now(&mut self) -> u64 {
        self.clock.now()
    }

    pub(crate) fn entry(&mut self, fd: u32) -> GuestResult<&mut FdEntry> {
        self.fds.get_mut(&fd).ok_or(Errno::Badf)
    }

    /// The directory behind `fd` with its preopen index, or `EBADF`/`ENOTDIR`.
    pub(crate) fn dir(&self, fd: u32) -> GuestResult<(&Dir, u32, &FdEntry)> {
        let e = self.fds.get(&fd).ok_or(Errno::Badf)?;
        match (&e.handle, e.preopen) {
            (Handle::Dir(d), Some(p)) => Ok((d, p, e)),
            (Handle::File(_), _) => Err(Errno::Notdir),
            _ => Err(Errno::Badf),
        }
    }

    /// Like [`Self::dir`], but `EPERM` when the directory lies in a read-only mount (wasmtime-wasi's answer to
    /// a write through a directory without mutate permission).
    pub(crate) fn dir_mut(&self, fd: u32) -> GuestResult<(&Dir, u32, &FdEntry)> {
        let (d, p, e) = self.dir(fd)?;
        if self.read_only(p) {
            return Err(Errno::Perm);
        }
        Ok((d, p, e))
    }

    pub(crate) fn read_only(&self, preopen: u32) -> bool {
        self.preopens
            .get(preopen as usize)
            .is_none_or(|p| p.read_only)
    }

    /// The quota that applies under preopen `preopen`: the sandbox's under the root, a mount's own under
    /// a mount that has one.
    pub(crate) fn quota(&self, preopen: u32) -> Option<Arc<DiskQuota>> {
        match self.preopens.get(preopen as usize) {
            Some(p) if p.is_root => self.limits.disk_quota.clone(),
            Some(p) => p.quota.clone(),
            None => None,
        }
    }

    /// Inserts at the lowest free fd, or `EMFILE` when `max_open_fds` are open.
    pub(crate) fn insert(&mut self, entry: FdEntry) -> GuestResult<u32> {
        if self.fds.len() >= self.limits.max_open_fds {
            return Err(Errno::Mfile);
        }
        let mut fd = 0u32;
        for &k in self.fds.keys() {
            if k != fd {
                break;
            }
            fd += 1;
        }
        self.fds.insert(fd, entry);
        Ok(fd)
    }

    pub(crate) fn max_path_len(&self) -> usize {
        self.limits.max_path_len
    }
}

impl FdEntry {
    /// A second entry for the same open object, with the same flags and offset: what a child gets of the
    /// fd its parent hands it (`dup`, not a re-open).
    pub(crate) fn duplicate(&self) -> GuestResult<Self> {
        let handle = match &self.handle {
            Handle::Stdin(s) => Handle::Stdin(s.clone()),
            Handle::Stdout(s) => Handle::Stdout(s.clone()),
            Handle::Stderr(s) => Handle::Stderr(s.clone()),
            Handle::Dir(d) => Handle::Dir(d.try_clone()?),
            Handle::File(f) => Handle::File(f.try_clone()?),
            Handle::Pipe(end) => Handle::Pipe(end.duplicate()),
            Handle::Socket(socket) => Handle::Socket(socket.clone()),
        };
        Ok(Self {
            handle,
            preopen: self.preopen,
            is_preopen: self.is_preopen,
            rel_path: self.rel_path.clone(),
            lookupflags: self.lookupflags,
            oflags: self.oflags,
            fdflags: self.fdflags,
            rights_base: self.rights_base,
            rights_inheriting: self.rights_inheriting,
            read: self.read,
            write: self.write,
            offset: self.offset,
            readdir_cookie: self.readdir_cookie,
        })
    }

    pub(crate) fn stdio(handle: Handle) -> Self {
        let reads = match &handle {
            Handle::Stdin(_) => true,
            Handle::Pipe(end) => !end.is_write(),
            _ => false,
        };
        let (read, write, r) = if reads {
            (true, false, rights::FD_READ)
        } else {
            (false, true, rights::FD_WRITE)
        };
        Self {
            handle,
            preopen: None,
            is_preopen: false,
            rel_path: String::new(),
            lookupflags: 0,
            oflags: 0,
            fdflags: 0,
            rights_base: r,
            rights_inheriting: r,
            read,
            write,
            offset: 0,
            readdir_cookie: 0,
        }
    }
}

/// Joins a guest path onto the path of the directory it is relative to, to re-open it later from the preopen.
pub(crate) fn join_rel(base: &str, path: &str) -> String {
    if base.is_empty() {
        path.to_owned()
    } else if path.is_empty() {
        base.to_owned()
    } else {
        format!("{base}/{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctx_can_live_in_a_store() {
        fn store_data<T: Send + 'static>() {}
        store_data::<WasiCtx>();
    }

    #[test]
    fn join_rel_keeps_paths_relative() {
        assert_eq!(join_rel("", "a/b"), "a/b");
        assert_eq!(join_rel("a", "../b"), "a/../b");
        assert_eq!(join_rel("a", ""), "a");
    }

    #[test]
    fn insert_takes_lowest_free_fd_and_respects_the_limit() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut cfg = WasiConfig::new(dir.path());
        cfg.limits.max_open_fds = 6;
        let mut ctx = WasiCtx::new(cfg)?;
        ctx.fds.remove(&1);
        let ctx_stdout = ctx.stdout.clone();
        let out = || FdEntry::stdio(Handle::Stdout(ctx_stdout.clone()));
        assert_eq!(ctx.insert(out()), Ok(1));
        assert_eq!(ctx.insert(out()), Ok(4));
        assert_eq!(ctx.insert(out()), Ok(5));
        assert_eq!(ctx.insert(out()), Err(Errno::Mfile));
        Ok(())
    }
}
