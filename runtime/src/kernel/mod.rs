//! A sandbox's kernel: the part of its small operating system that lets processes start other processes.
//! It holds the process table of children ([`table`]), starts programs by name ([`spawn`]) on threads of
//! their own, and answers the `stasis` imports ([`crate::wasi::process`]) — spawn, wait, kill — for every
//! process of the sandbox. Pipes between processes are WASI fds ([`crate::wasi::pipe`]). It also holds
//! the sandbox's virtual network ([`crate::net::Network`]), which every process's sockets share and which
//! outlives each of them.
//!
//! The kernel is shared (an `Arc`) by the sandbox and the WASI contexts of all its processes, so a guest
//! starts a child without the sandbox's lock. The sandbox takes new children into its own table the next
//! time it looks ([`Kernel::take_started`]), so listing, killing, pausing and dropping the sandbox reach
//! them as they reach the commands it started itself.
//!
//! A pause suspends children like any command; the table ([`Kernel::save`]) and the bytes in the pipes go
//! into the blob's manifest ([`crate::state::KernelState`]). A resume brings the table back with the
//! children that ran *suspended* ([`Kernel::restore`]), and they continue on threads of their own when
//! the command that started them does ([`crate::Sandbox::continue_children`]).

pub(crate) mod preinit;
pub(crate) mod spawn;
pub(crate) mod table;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use crate::command::Command;
use crate::running::Control;
use crate::wasi::StopReason;
use crate::wasi::errno::Errno;
use crate::wasi::pipe::{WAIT_SLICE, Wake};
use crate::wasi::process::{ChildStdio, ProcessHost, Reaped, SpawnRequest};
use spawn::Launcher;
use table::{Child, ChildState, Reap, Table};

/// A child process as [`Kernel::children`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildInfo {
    /// Its pid in the sandbox.
    pub pid: u32,
    /// Its parent's pid (0 once the parent has ended).
    pub ppid: u32,
    /// The program it runs.
    pub program: String,
    /// Its argv.
    pub args: Vec<String>,
    /// Its working directory, when its parent gave one.
    pub cwd: Option<String>,
    /// Whether it has not ended (it runs, or is suspended with its sandbox); otherwise it ended and its
    /// parent has not reaped it yet.
    pub running: bool,
}

/// The process-starting half of a sandbox, shared by its processes.
pub(crate) struct Kernel {
    launcher: Launcher,
    table: Mutex<Table>,
    /// Notified when a child ends.
    ended: Condvar,
    next_pid: AtomicU32,
    /// Children started since the sandbox last took them into its process table.
    started: Mutex<Vec<Control>>,
    me: Weak<Kernel>,
}

impl Kernel {
    /// A kernel starting processes as `launcher` says, its next pid `next_pid`.
    pub(crate) fn new(launcher: Launcher, next_pid: u32) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            launcher,
            table: Mutex::new(Table::default()),
            ended: Condvar::new(),
            next_pid: AtomicU32::new(next_pid.max(1)),
            started: Mutex::new(Vec::new()),
            me: me.clone(),
        })
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The sandbox's network, shared by all its processes and outliving each of them.
    pub(crate) fn network(&self) -> &crate::net::Network {
        &self.launcher.network
    }

    /// A new pid, for any process of the sandbox.
    pub(crate) fn allocate_pid(&self) -> u32 {
        self.next_pid.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes sure later pids are above `pid` (a restored process keeps its own).
    pub(crate) fn reserve_pid(&self, pid: u32) {
        self.next_pid
            .fetch_max(pid.saturating_add(1), Ordering::Relaxed);
    }

    /// The children started since the last call, for the sandbox's process table.
    pub(crate) fn take_started(&self) -> Vec<Control> {
        std::mem::take(&mut *self.started.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Process `pid` (one the sandbox started) ended: its children become orphans.
    pub(crate) fn orphan(&self, pid: u32) {
        self.table().orphan(pid);
    }

    /// Every child process, in pid order.
    pub(crate) fn children(&self) -> Vec<ChildInfo> {
        self.table()
            .iter()
            .map(|(pid, child)| ChildInfo {
                pid,
                ppid: child.ppid,
                program: child.program.clone(),
                args: child.args.clone(),
                cwd: child.cwd.clone(),
                running: !matches!(child.state, ChildState::Exited(_)),
            })
            .collect()
    }

    /// The table as saved.
    pub(crate) fn save(&self) -> Vec<crate::state::ChildSaved> {
        self.table().save()
    }

    /// Replaces the table with a saved one (a restored sandbox's, before any process runs).
    pub(crate) fn restore(&self, saved: &[crate::state::ChildSaved]) {
        for child in saved {
            self.reserve_pid(child.pid);
        }
        *self.table() = Table::restore(saved);
    }

    /// The suspended children, in pid order.
    pub(crate) fn suspended(&self) -> Vec<u32> {
        self.table().suspended()
    }

    /// Whether `pid` is a child in the table.
    pub(crate) fn is_child(&self, pid: u32) -> bool {
        self.table().iter().any(|(p, _)| p == pid)
    }

    /// Runs `command`, suspended child `pid` continuing, on a thread of its own; false (the command
    /// dropped) when `pid` is not a suspended child or no thread could be made.
    pub(crate) fn continue_child(self: &Arc<Self>, pid: u32, command: Command) -> bool {
        if !self.table().continued(pid, command.control()) {
            return false;
        }
        self.run_child(pid, command)
    }

    /// Runs child `pid`'s `command` on a thread of its own, recording how it ends.
    fn run_child(self: &Arc<Self>, pid: u32, command: Command) -> bool {
        let kernel = self.clone();
        let thread = std::thread::Builder::new()
            .name(format!("stasis-pid-{pid}"))
            .spawn(move || {
                let output = command.run();
                // A suspended child lives on in its sandbox's blob: it has not ended.
                if !output.suspended {
                    kernel.exited(pid, output.exit_code);
                }
            });
        if thread.is_err() {
            // The command was dropped with the closure: it counts as ended, as a failed exec would.
            self.exited(pid, 127);
            return false;
        }
        true
    }

    /// Child `pid` ended with `status`.
    pub(crate) fn exited(&self, pid: u32, status: i32) {
        self.table().exited(pid, status);
        self.ended.notify_all();
    }
}

impl ProcessHost for Kernel {
    fn spawn(&self, parent: u32, request: SpawnRequest, stdio: ChildStdio) -> Result<u32, Errno> {
        let kernel = self.me.upgrade().ok_or(Errno::Srch)?;
        let max = self.launcher.limits.max_processes as usize;
        // Checked before, not while, the child is built: instantiating it (or compiling its program the
        // first time) must not hold up the other processes' waits. Concurrent spawns may overshoot the
        // bound by as many as race here, never more.
        if self.table().len() >= max {
            return Err(Errno::Again);
        }
        let pid = self.allocate_pid();
        let command = self
            .launcher
            .command(kernel.clone(), pid, &request, stdio)?;
        let control = command.control();
        let mut table = self.table();
        table.insert(
            pid,
            Child {
                ppid: parent,
                program: request.program.clone(),
                args: request.args.clone(),
                cwd: request.cwd.clone(),
                state: ChildState::Running(control.clone()),
            },
        );
        drop(table);
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(control);
        if !kernel.run_child(pid, command) {
            return Err(Errno::Again);
        }
        Ok(pid)
    }

    fn wait(
        &self,
        parent: u32,
        pid: Option<u32>,
        block: bool,
        wake: &dyn Fn() -> Option<Wake>,
    ) -> Result<Result<Reaped, Wake>, Errno> {
        let mut table = self.table();
        loop {
            match table.reap(parent, pid) {
                Reap::Ended(reaped) => return Ok(Ok(reaped)),
                Reap::NoChild => return Err(Errno::Child),
                Reap::Running if !block => return Err(Errno::Again),
                Reap::Running => {}
            }
            if let Some(why) = wake() {
                return Ok(Err(why));
            }
            table = match self.ended.wait_timeout(table, WAIT_SLICE) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    fn kill(&self, pid: u32, signal: u32) -> Result<(), Errno> {
        let reason = match signal {
            9 => StopReason::Kill,
            2 => StopReason::Interrupt,
            // A guest cannot catch signals: every other one that ends a process ends it at once (HUP and
            // QUIT as TERM does).
            1 | 3 | 15 => StopReason::Terminate,
            0 => {
                return self.table().control(pid).map(|_| ()).ok_or(Errno::Srch);
            }
            _ => return Err(Errno::Inval),
        };
        let control = self.table().control(pid).cloned().ok_or(Errno::Srch)?;
        control.stop(reason);
        Ok(())
    }
}
