//! Commands as processes of their own: a command module prepared under the sandbox's lock
//! ([`crate::Sandbox::start_command`]) and run to completion on any thread ([`Command::run`]), with its
//! output streamed as written and its stdin a pipe the host writes to while it runs.
//!
//! A command's store is its own and the disk quota is shared through an `Arc`, so running one needs nothing
//! of the sandbox: the caller prepares it under the sandbox's lock and runs it after releasing the lock,
//! and other calls on the sandbox proceed meanwhile.
//!
//! Stopping: a [`CommandControl`] ends a running command from any thread. Wasm code is stopped at its next
//! epoch check (within one epoch tick), a guest sleeping in `poll_oneoff` or waiting on its stdin pipe is
//! woken, and the command ends with exit code 128 + the signal ([`StopReason::exit_code`]) and the reason in
//! [`CommandOutput::trap`]. A command's wasm stack cannot be captured, so pausing a sandbox ends its running
//! commands ([`StopReason::Pause`]) and waits for them before capturing anything; killing (dropping) a
//! sandbox ends them too ([`StopReason::SandboxGone`]). A snapshot (a fork's source) leaves them running:
//! the blob holds no command, and a file a command is writing at that moment may be captured half-written.
//!
//! CPU time: the sandbox's `cpu_time_per_call` bounds the epoch ticks a command spends *running wasm*;
//! time blocked in host calls (sleeping, waiting for stdin) does not count, so a background command may
//! wait as long as it likes.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{Instance, Store, Trap, UpdateDeadline};

use crate::process::ProcessData;
use crate::template::Template;
use crate::wasi::{Interrupt, OutputSink, ProcExit, Stdin, StdinPipe, StopReason, Stopped};

/// The standard streams of a command.
#[derive(Debug)]
pub struct CommandIo {
    /// Standard input: bytes, or a [`StdinPipe`] the host writes to while the command runs.
    pub stdin: Stdin,
    /// Standard output: captured, streamed ([`OutputSink::stream`]) or both.
    pub stdout: OutputSink,
    /// Standard error.
    pub stderr: OutputSink,
}

/// What a command module printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit code: the guest's own, 0 when `_start` returned, 134 when it trapped (as `wasmtime run`),
    /// 128 + the signal when it was stopped from outside.
    pub exit_code: i32,
    /// What was captured of stdout (up to the sandbox's output limit; empty for a streaming sink).
    pub stdout: Vec<u8>,
    /// What was captured of stderr.
    pub stderr: Vec<u8>,
    /// Why the guest trapped or was stopped, if it was (a CPU timeout says so).
    pub trap: Option<String>,
    /// Why it was stopped from outside, if it was.
    pub stopped: Option<StopReason>,
}

/// A command ready to run: instantiated, not started.
pub struct Command {
    pub(crate) store: Store<ProcessData>,
    pub(crate) instance: Instance,
    pub(crate) template: Template,
    pub(crate) control: CommandControl,
    pub(crate) cpu_limit: Duration,
    /// The wall-time limit of the whole command, and when it runs out (`None`: too far to represent).
    pub(crate) wall_limit: Duration,
    pub(crate) wall_deadline: Option<Instant>,
}

/// Stops a command and observes its end, from any thread. Cheap to clone.
#[derive(Clone)]
pub struct CommandControl {
    shared: Arc<ControlShared>,
}

struct ControlShared {
    interrupt: Arc<Interrupt>,
    /// The command's stdin when it is a pipe, closed when the command is stopped or ends.
    stdin: Option<StdinPipe>,
    finished: Mutex<bool>,
    ended: Condvar,
}

impl std::fmt::Debug for CommandControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandControl")
            .field("stopped", &self.shared.interrupt.stopped())
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl CommandControl {
    pub(crate) fn new(interrupt: Arc<Interrupt>, stdin: Option<StdinPipe>) -> Self {
        Self {
            shared: Arc::new(ControlShared {
                interrupt,
                stdin,
                finished: Mutex::new(false),
                ended: Condvar::new(),
            }),
        }
    }

    /// Asks the command to stop for `reason`; returns whether this was the first stop request. It ends
    /// within an epoch tick of running wasm, or as soon as the host call it is blocked in returns.
    pub fn stop(&self, reason: StopReason) -> bool {
        let first = self.shared.interrupt.trigger(reason);
        if let Some(stdin) = &self.shared.stdin {
            stdin.close();
        }
        first
    }

    /// The command's stdin pipe, if it was started with one.
    pub fn stdin(&self) -> Option<&StdinPipe> {
        self.shared.stdin.as_ref()
    }

    /// Whether the command has ended (or was dropped without running).
    pub fn is_finished(&self) -> bool {
        *self.lock()
    }

    /// Blocks until the command has ended.
    pub fn wait(&self) {
        let mut finished = self.lock();
        while !*finished {
            finished = self
                .shared
                .ended
                .wait(finished)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    fn finish(&self) {
        if let Some(stdin) = &self.shared.stdin {
            stdin.close();
        }
        *self.lock() = true;
        self.shared.ended.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, bool> {
        self.shared
            .finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

impl Command {
    /// A handle to stop the command and wait for its end.
    pub fn control(&self) -> CommandControl {
        self.control.clone()
    }

    /// Runs the command to completion (blocking: call it off any async runtime) and reports how it ended.
    pub fn run(mut self) -> CommandOutput {
        let cpu = self.store.data().limits.usage().running();
        let outcome =
            crate::instantiate::initialize(&self.template, &mut self.store, &self.instance)
                .and_then(|()| {
                    self.instance
                        .get_typed_func::<(), ()>(&mut self.store, "_start")?
                        .call(&mut self.store, ())
                });
        drop(cpu);
        let stopped = self.control.shared.interrupt.stopped();
        let (exit_code, trap, stopped) = match outcome {
            Ok(()) => (0, None, None),
            Err(error) => {
                let stop = error.downcast_ref::<Stopped>().map(|s| s.0);
                match (error.downcast_ref::<ProcExit>(), stop.or(stopped)) {
                    (Some(exit), None) => (exit.0, None, None),
                    // Stopped from outside: whatever the guest did on the way out (a panic when its sleep
                    // was cut short), the stop is what ended it.
                    (_, Some(reason)) => {
                        (reason.exit_code(), Some(reason.to_string()), Some(reason))
                    }
                    (None, None)
                        if matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt)) =>
                    {
                        let message = if self.wall_deadline.is_some_and(|d| Instant::now() >= d) {
                            format!(
                                "the command exceeded its wall-time limit of {:?}",
                                self.wall_limit
                            )
                        } else {
                            format!(
                                "the command exceeded its CPU time limit of {:?}",
                                self.cpu_limit
                            )
                        };
                        (134, Some(message), None)
                    }
                    (None, None) => (134, Some(format!("{error:?}")), None),
                }
            }
        };
        let wasi = &mut self.store.data_mut().wasi;
        CommandOutput {
            exit_code,
            stdout: wasi.take_stdout(),
            stderr: wasi.take_stderr(),
            trap,
            stopped,
        }
    }
}

impl Drop for Command {
    fn drop(&mut self) {
        self.control.finish();
    }
}

/// Makes `store` stoppable through `interrupt`, bounds the ticks it spends running wasm by
/// `budget_ticks`, and its whole run by `wall_deadline`: the epoch deadline is one tick ahead, and each
/// time it passes the callback checks for a stop request, the wall deadline, and counts the tick. Host
/// sleeps and stdin waits do not use up ticks, but end at the wall deadline.
pub(crate) fn arm(
    store: &mut Store<ProcessData>,
    interrupt: Arc<Interrupt>,
    budget_ticks: u64,
    wall_deadline: Option<Instant>,
) {
    let mut used = 0u64;
    store.epoch_deadline_callback(move |_| {
        if let Some(reason) = interrupt.stopped() {
            return Err(wasmtime::Error::new(Stopped(reason)));
        }
        used += 1;
        if used >= budget_ticks || wall_deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(UpdateDeadline::Interrupt);
        }
        Ok(UpdateDeadline::Continue(1))
    });
    store.set_epoch_deadline(1);
    store.data_mut().wasi.set_deadline(wall_deadline);
}
