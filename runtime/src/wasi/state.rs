//! [`WasiState`]: the plain-data image of a [`WasiCtx`], and `save`/`restore` between the two. Restore re-opens
//! every fd by its path relative to its preopen, at the same fd number and offset; gaps left by closed fds stay
//! gaps and a closed preopen stays closed.
//!
//! Objects shared between the processes of a sandbox are saved by reference: a pipe end names its pipe
//! (whose bytes the sandbox's kernel state holds), a stream handed down by a parent names the process
//! that owns it ([`SaveLinks`]); restore joins them up again ([`RestoreLinks`]).

use std::collections::HashMap;
use std::sync::Arc;

use cap_fs_ext::{FollowSymlinks, MetadataExt as _, OpenOptionsFollowExt as _};
use serde::{Deserialize, Serialize};

use super::ctx::{FdEntry, Handle, SharedOutput, SharedStdin, WasiCtx};
use super::pipe::{PIPE_CAPACITY, Pipe, PipeEnd};
use super::types::LOOKUP_SYMLINK_FOLLOW;
use super::{WasiConfig, WasiRestoreError, WasiSaveError};

/// The saved WASI state of one guest instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WasiState {
    /// Program arguments.
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// The preopens the fds hang from, index 0 being the root when the context has one.
    pub preopens: Vec<PreopenState>,
    /// Every open fd, in increasing fd order.
    pub fds: Vec<FdState>,
    /// Value of the virtual monotonic clock when saved, in nanoseconds.
    pub monotonic_ns: u64,
    /// The host call the process unwound from, re-issued when it is rewound.
    pub pending: Option<super::PendingCall>,
}

/// A preopen as saved: what the guest calls it and whether it was read-only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreopenState {
    /// Guest name ("/" for the root).
    pub guest: String,
    /// Whether writes were refused.
    pub read_only: bool,
}

/// What an fd is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FdKindState {
    /// Standard input.
    Stdin,
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// A preopened directory (its preopen is [`FdState::preopen`]).
    PreopenDir,
    /// A directory opened by the guest.
    Dir,
    /// A regular file (or other non-directory) opened by the guest.
    File,
    /// One end of a pipe between processes of the sandbox.
    Pipe {
        /// The pipe, as the sandbox's saved kernel names it.
        pipe: u64,
        /// Whether this is the write end.
        write: bool,
    },
    /// The standard input of process `owner`, handed down to this one.
    SharedStdin {
        /// The process whose own stdin it is.
        owner: u32,
    },
    /// The standard output of process `owner`, handed down to this one.
    SharedStdout {
        /// The process whose own stdout it is.
        owner: u32,
    },
    /// The standard error of process `owner`, handed down to this one.
    SharedStderr {
        /// The process whose own stderr it is.
        owner: u32,
    },
    /// A socket of the sandbox's network (format 2.3); a listening one names its listener in the
    /// sandbox's saved network.
    Socket(crate::net::state::SocketSaved),
}

/// Who owns each standard stream of a sandbox's processes, for saving the fds that share them.
#[derive(Default)]
pub(crate) struct SaveLinks {
    /// By the stream's address: (owner pid, 0 stdin / 1 stdout / 2 stderr).
    owners: HashMap<usize, (u32, u8)>,
}

impl SaveLinks {
    /// Records the own streams of `ctx`, process `pid`.
    pub(crate) fn add(&mut self, pid: u32, ctx: &WasiCtx) {
        self.owners
            .insert(Arc::as_ptr(&ctx.stdin) as usize, (pid, 0));
        self.owners
            .insert(Arc::as_ptr(&ctx.stdout) as usize, (pid, 1));
        self.owners
            .insert(Arc::as_ptr(&ctx.stderr) as usize, (pid, 2));
    }

    fn owner<T>(&self, stream: &Arc<T>) -> Option<(u32, u8)> {
        self.owners.get(&(Arc::as_ptr(stream) as usize)).copied()
    }
}

/// The shared objects of a sandbox being restored: its pipes, and the own streams of the processes
/// restored so far (in pid order, so a parent's are there before its children's).
#[derive(Default)]
pub(crate) struct RestoreLinks {
    pipes: HashMap<u64, (PipeEnd, PipeEnd)>,
    streams: HashMap<u32, (SharedStdin, SharedOutput, SharedOutput)>,
    /// The sandbox's network and its listeners back in it, by saved id.
    network: Option<crate::net::Network>,
    listeners: HashMap<u64, Arc<crate::net::listener::Bound>>,
}

impl RestoreLinks {
    /// Links holding the saved pipes, by id. A pipe holding more than a pipe can is refused.
    pub(crate) fn with_pipes(
        pipes: impl IntoIterator<Item = (u64, Vec<u8>)>,
    ) -> Result<Self, (u64, usize)> {
        let mut links = Self::default();
        for (id, bytes) in pipes {
            if bytes.len() > PIPE_CAPACITY {
                return Err((id, bytes.len()));
            }
            links.pipes.insert(id, Pipe::holding(PIPE_CAPACITY, bytes));
        }
        Ok(links)
    }

    /// Puts the saved listeners back into `network` (before any process runs), for the fds listening on
    /// them; `network` is also what every restored process's sockets use. Fails with the saved listener
    /// that cannot be (its port taken twice, or more listeners than the network may have).
    pub(crate) fn with_network(
        &mut self,
        network: &crate::net::Network,
        listeners: &[crate::net::ListenerSaved],
    ) -> Result<(), crate::net::ListenerSaved> {
        self.network = Some(network.clone());
        for saved in listeners {
            let listener = network.restore_listener(saved).map_err(|_| saved.clone())?;
            self.listeners.insert(
                saved.id,
                Arc::new(crate::net::listener::Bound::new(listener, network.clone())),
            );
        }
        Ok(())
    }

    /// Records the own streams of restored process `pid`, for its children's fds.
    pub(crate) fn add(&mut self, pid: u32, ctx: &WasiCtx) {
        self.streams.insert(
            pid,
            (ctx.stdin.clone(), ctx.stdout.clone(), ctx.stderr.clone()),
        );
    }
}

/// One saved fd.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdState {
    /// The fd number.
    pub fd: u32,
    /// Its kind.
    pub kind: FdKindState,
    /// Index of the preopen it hangs from (`None` for stdio).
    pub preopen: Option<u32>,
    /// Path relative to that preopen.
    pub path: String,
    /// `lookupflags` it was opened with.
    pub lookupflags: u32,
    /// `oflags` it was opened with.
    pub oflags: u16,
    /// Current `fdflags` (`APPEND`, …).
    pub fdflags: u16,
    /// Base rights.
    pub rights_base: u64,
    /// Inheriting rights.
    pub rights_inheriting: u64,
    /// Opened for reading.
    pub read: bool,
    /// Opened for writing.
    pub write: bool,
    /// Current offset.
    pub offset: u64,
    /// Last readdir cookie.
    pub readdir_cookie: u64,
}

impl WasiCtx {
    /// Captures the state as plain data. Refuses when an open file or directory was deleted or replaced since
    /// it was opened (it could not be re-opened by path).
    pub fn save(&self) -> Result<WasiState, WasiSaveError> {
        self.save_linked(&SaveLinks::default())
    }

    /// [`WasiCtx::save`] for a process of a sandbox whose streams `links` knows: a stream handed down by
    /// another process is saved as that process's, and one whose owner is not in `links` (it ended) as
    /// this process's own.
    pub(crate) fn save_linked(&self, links: &SaveLinks) -> Result<WasiState, WasiSaveError> {
        let mut fds = Vec::with_capacity(self.fds.len());
        for (&fd, e) in &self.fds {
            self.check_still_there(fd, e)?;
            let kind = match &e.handle {
                Handle::Stdin(s) if Arc::ptr_eq(s, &self.stdin) => FdKindState::Stdin,
                Handle::Stdout(s) if Arc::ptr_eq(s, &self.stdout) => FdKindState::Stdout,
                Handle::Stderr(s) if Arc::ptr_eq(s, &self.stderr) => FdKindState::Stderr,
                Handle::Stdin(s) => match links.owner(s) {
                    Some((owner, _)) => FdKindState::SharedStdin { owner },
                    None => FdKindState::Stdin,
                },
                Handle::Stdout(s) | Handle::Stderr(s) => match links.owner(s) {
                    Some((owner, 2)) => FdKindState::SharedStderr { owner },
                    Some((owner, _)) => FdKindState::SharedStdout { owner },
                    None if matches!(e.handle, Handle::Stderr(_)) => FdKindState::Stderr,
                    None => FdKindState::Stdout,
                },
                Handle::Pipe(end) => FdKindState::Pipe {
                    pipe: end.id(),
                    write: end.is_write(),
                },
                Handle::Socket(socket) => FdKindState::Socket(socket.save()),
                Handle::Dir(_) if e.is_preopen => FdKindState::PreopenDir,
                Handle::Dir(_) => FdKindState::Dir,
                Handle::File(_) => FdKindState::File,
            };
            fds.push(FdState {
                fd,
                kind,
                preopen: e.preopen,
                path: e.rel_path.clone(),
                lookupflags: e.lookupflags,
                oflags: e.oflags,
                fdflags: e.fdflags,
                rights_base: e.rights_base,
                rights_inheriting: e.rights_inheriting,
                read: e.read,
                write: e.write,
                offset: e.offset,
                readdir_cookie: e.readdir_cookie,
            });
        }
        // `save` takes `&self`; reading a copy of the clock leaves the live one untouched.
        let mut clock = self.clock.clone();
        Ok(WasiState {
            args: self.args.clone(),
            env: self.env.clone(),
            preopens: self
                .preopens
                .iter()
                .map(|p| PreopenState {
                    guest: p.guest.clone(),
                    read_only: p.read_only,
                })
                .collect(),
            fds,
            monotonic_ns: clock.now(),
            pending: self.suspend.pending.clone(),
        })
    }

    /// Compares the (device, inode) of an open handle with what its path names now.
    fn check_still_there(&self, fd: u32, e: &FdEntry) -> Result<(), WasiSaveError> {
        if e.is_preopen {
            return Ok(());
        }
        let Some(p) = e.preopen.and_then(|p| self.preopens.get(p as usize)) else {
            return Ok(());
        };
        let meta_err = |source| WasiSaveError::Metadata {
            fd,
            path: e.rel_path.clone(),
            source,
        };
        let (dev, ino) = match &e.handle {
            Handle::File(f) => {
                let m = f.metadata().map_err(meta_err)?;
                (
                    std::os::unix::fs::MetadataExt::dev(&m),
                    std::os::unix::fs::MetadataExt::ino(&m),
                )
            }
            Handle::Dir(d) => {
                let m = d.dir_metadata().map_err(meta_err)?;
                (m.dev(), m.ino())
            }
            _ => return Ok(()),
        };
        let now = if e.lookupflags & LOOKUP_SYMLINK_FOLLOW != 0 {
            p.dir.metadata(&e.rel_path)
        } else {
            p.dir.symlink_metadata(&e.rel_path)
        };
        match now {
            Ok(m) if (m.dev(), m.ino()) == (dev, ino) => Ok(()),
            _ => Err(WasiSaveError::FileGone {
                fd,
                path: e.rel_path.clone(),
            }),
        }
    }

    /// Rebuilds a context from saved state: live resources (directories, stdio, limits) come from `config`,
    /// arguments, environment, fds and the clock from `state`.
    pub fn restore(config: WasiConfig, state: &WasiState) -> Result<Self, WasiRestoreError> {
        Self::restore_linked(config, state, &RestoreLinks::default())
    }

    /// [`WasiCtx::restore`] for a process of a sandbox: pipe ends and streams handed down are taken from
    /// `links` (a stream whose owner is not there becomes the process's own).
    pub(crate) fn restore_linked(
        mut config: WasiConfig,
        state: &WasiState,
        links: &RestoreLinks,
    ) -> Result<Self, WasiRestoreError> {
        let configured: Vec<String> = config
            .root
            .as_ref()
            .map(|_| "/".to_owned())
            .into_iter()
            .chain(config.mounts.iter().map(|m| m.guest.clone()))
            .collect();
        let saved: Vec<String> = state.preopens.iter().map(|p| p.guest.clone()).collect();
        if configured != saved {
            return Err(WasiRestoreError::PreopenMismatch { saved, configured });
        }
        if state.fds.len() > config.limits.max_open_fds {
            return Err(WasiRestoreError::TooManyFds {
                count: state.fds.len(),
                max: config.limits.max_open_fds,
            });
        }
        config.args = state.args.clone();
        config.env = state.env.clone();
        let mut ctx = Self::without_fds(config, state.monotonic_ns)?;
        ctx.suspend.pending = state.pending.clone();
        ctx.network = links.network.clone();
        for s in &state.fds {
            let entry = ctx.reopen(s, links)?;
            ctx.fds.insert(s.fd, entry);
        }
        Ok(ctx)
    }

    fn reopen(&self, s: &FdState, links: &RestoreLinks) -> Result<FdEntry, WasiRestoreError> {
        let reopen_err = |source| WasiRestoreError::Reopen {
            fd: s.fd,
            path: s.path.clone(),
            source,
        };
        let preopen = |p: Option<u32>| {
            let idx = p.ok_or(WasiRestoreError::UnknownPreopen {
                fd: s.fd,
                preopen: u32::MAX,
            })?;
            self.preopens
                .get(idx as usize)
                .ok_or(WasiRestoreError::UnknownPreopen {
                    fd: s.fd,
                    preopen: idx,
                })
        };
        let handle = match &s.kind {
            FdKindState::Stdin => Handle::Stdin(self.stdin.clone()),
            FdKindState::Stdout => Handle::Stdout(self.stdout.clone()),
            FdKindState::Stderr => Handle::Stderr(self.stderr.clone()),
            FdKindState::SharedStdin { owner } => Handle::Stdin(
                links
                    .streams
                    .get(owner)
                    .map_or_else(|| self.stdin.clone(), |(i, _, _)| i.clone()),
            ),
            FdKindState::SharedStdout { owner } => Handle::Stdout(
                links
                    .streams
                    .get(owner)
                    .map_or_else(|| self.stdout.clone(), |(_, o, _)| o.clone()),
            ),
            FdKindState::SharedStderr { owner } => Handle::Stderr(
                links
                    .streams
                    .get(owner)
                    .map_or_else(|| self.stderr.clone(), |(_, _, e)| e.clone()),
            ),
            FdKindState::Pipe { pipe, write } => {
                let (r, w) = links.pipes.get(pipe).ok_or(WasiRestoreError::UnknownPipe {
                    fd: s.fd,
                    pipe: *pipe,
                })?;
                Handle::Pipe(if *write { w.duplicate() } else { r.duplicate() })
            }
            FdKindState::Socket(saved) => {
                let mut missing = None;
                let socket = super::socket::Socket::restore(saved, |id| {
                    missing = Some(id);
                    links.listeners.get(&id).cloned()
                });
                Handle::Socket(socket.ok_or(WasiRestoreError::UnknownListener {
                    fd: s.fd,
                    listener: missing.unwrap_or(0),
                })?)
            }
            FdKindState::PreopenDir => {
                Handle::Dir(preopen(s.preopen)?.dir.try_clone().map_err(reopen_err)?)
            }
            FdKindState::Dir => {
                let p = preopen(s.preopen)?;
                let d = if s.path.is_empty() {
                    p.dir.try_clone()
                } else {
                    p.dir.open_dir(&s.path)
                };
                Handle::Dir(d.map_err(reopen_err)?)
            }
            FdKindState::File => {
                let p = preopen(s.preopen)?;
                let mut opts = cap_std::fs::OpenOptions::new();
                opts.read(s.read || !s.write).write(s.write);
                opts.follow(if s.lookupflags & LOOKUP_SYMLINK_FOLLOW != 0 {
                    FollowSymlinks::Yes
                } else {
                    FollowSymlinks::No
                });
                Handle::File(
                    p.dir
                        .open_with(&s.path, &opts)
                        .map_err(reopen_err)?
                        .into_std(),
                )
            }
        };
        Ok(FdEntry {
            handle,
            preopen: s.preopen,
            is_preopen: s.kind == FdKindState::PreopenDir,
            rel_path: s.path.clone(),
            lookupflags: s.lookupflags,
            oflags: s.oflags,
            fdflags: s.fdflags,
            rights_base: s.rights_base,
            rights_inheriting: s.rights_inheriting,
            read: s.read,
            write: s.write,
            offset: s.offset,
            readdir_cookie: s.readdir_cookie,
        })
    }
}
