//! A process out of its sandbox, running on a thread of its own — a command ([`crate::Command`]) or a
//! reactor's handler call ([`crate::ProcessCall`]) — and the handle ([`Control`]) through which the sandbox
//! stops it, suspends it and takes it back.
//!
//! Suspending, as a pause or snapshot does it: the sandbox asks ([`Control::request_suspend`]: the guest's
//! interrupt, a wake-up for a stdin wait, an epoch tick so that running wasm sees it at once); the guest
//! unwinds at its next unwind point and its thread *parks* the process here ([`Control::park`]) and waits;
//! the sandbox takes it ([`Control::wait_parked`]), captures it, and then either hands it back to be rewound
//! in place ([`Control::resume`], after a snapshot or a failed pause) or keeps it (`release`, the pause
//! is durable: the thread ends, and the process lives on in the blob). A process that finishes instead is
//! handed back ([`Control::finish`]): a reactor to be idle in its sandbox again, a command to be forgotten.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::process::Process;
use crate::state::ProcessKind;
use crate::wasi::{Interrupt, StdinPipe, StopReason};

/// Where the process of a run is.
enum Slot {
    /// On its thread, running.
    Running,
    /// Unwound, waiting for the sandbox to take it.
    Parked(Box<Process>),
    /// Taken by the sandbox (being captured).
    Taken,
    /// Handed back to its thread, to be rewound and continue.
    Resume(Box<Process>),
    /// Kept by the sandbox: saved in a blob, the thread ends.
    Released,
    /// Ended (the thread left the process here; `None` when nothing comes back, a command).
    Finished(Option<Box<Process>>),
    /// Handed back to the sandbox by [`Control::wait_parked`] or [`Control::take_finished`].
    Collected,
}

/// What the sandbox decided about a parked process.
pub(crate) enum Decision {
    /// Rewind it and carry on.
    Resume(Box<Process>),
    /// It is saved; end the run as suspended.
    Released,
}

/// What [`Control::wait_parked`] found.
pub(crate) enum Waited {
    /// The process unwound and is the sandbox's now.
    Parked(Box<Process>),
    /// The run ended; a reactor's process is back.
    Finished(Option<Box<Process>>),
    /// Neither happened in time.
    TimedOut,
}

struct Shared {
    pid: u32,
    template: String,
    label: String,
    kind: ProcessKind,
    interrupt: Arc<Interrupt>,
    stdin: Option<StdinPipe>,
    /// Whether `stdin` is the process's own (a stop closes it) or one it shares with its parent (a stop
    /// only wakes it: the parent still reads it).
    owns_stdin: bool,
    engine: wasmtime::Engine,
    /// Whether the process's module can unwind mid-call.
    suspendable: bool,
    slot: Mutex<Slot>,
    /// Set when the thread is done with the run (whatever came of it).
    done: Mutex<bool>,
    changed: Condvar,
}

/// The handle between a process's run and its sandbox. Cheap to clone; clones are the same run.
#[derive(Clone)]
pub struct Control {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("pid", &self.shared.pid)
            .field("stopped", &self.shared.interrupt.stopped())
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// The stdin a [`Control`] wakes when it stops or suspends its process.
pub(crate) enum StdinWake {
    /// None to wake.
    None,
    /// The process's own: a stop closes it.
    Own(StdinPipe),
    /// One it shares with its parent (a child the kernel started): a stop only wakes it, since the
    /// parent still reads it.
    Shared(StdinPipe),
}

impl Control {
    pub(crate) fn new(process: &Process, stdin: StdinWake, engine: wasmtime::Engine) -> Self {
        let (stdin, owns_stdin) = match stdin {
            StdinWake::None => (None, false),
            StdinWake::Own(pipe) => (Some(pipe), true),
            StdinWake::Shared(pipe) => (Some(pipe), false),
        };
        Self {
            shared: Arc::new(Shared {
                pid: process.pid,
                template: process.template.name().to_owned(),
                label: process.label.clone(),
                kind: process.kind,
                interrupt: process.interrupt.clone(),
                stdin,
                owns_stdin,
                engine,
                suspendable: process.template.inner.layout.pausable.mid_call(),
                slot: Mutex::new(Slot::Running),
                done: Mutex::new(false),
                changed: Condvar::new(),
            }),
        }
    }

    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.shared.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait_slot<'a>(&self, guard: MutexGuard<'a, Slot>) -> MutexGuard<'a, Slot> {
        self.shared
            .changed
            .wait(guard)
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The process's id in its sandbox.
    pub fn pid(&self) -> u32 {
        self.shared.pid
    }

    /// The label it was started with.
    pub fn label(&self) -> &str {
        &self.shared.label
    }

    /// Name of the template it runs.
    pub fn template(&self) -> &str {
        &self.shared.template
    }

    pub(crate) fn kind(&self) -> ProcessKind {
        self.shared.kind
    }

    pub(crate) fn suspendable(&self) -> bool {
        self.shared.suspendable
    }

    /// Interrupts the process (Ctrl-C): its next blocking or polling host call answers `EINTR` — a sleep or
    /// a wait for stdin at once — and it carries on running; see [`crate::wasi::Interrupt::request_sigint`].
    pub fn interrupt(&self) {
        self.shared.interrupt.request_sigint();
        if let Some(stdin) = &self.shared.stdin {
            stdin.wake();
        }
    }

    /// Asks the process to stop for `reason`; returns whether this was the first stop request. It ends
    /// within an epoch tick of running wasm, or as soon as the host call it is blocked in returns.
    pub fn stop(&self, reason: StopReason) -> bool {
        let first = self.shared.interrupt.trigger(reason);
        match &self.shared.stdin {
            Some(stdin) if self.shared.owns_stdin => stdin.close(),
            Some(stdin) => stdin.wake(),
            None => {}
        }
        first
    }

    /// Why it was asked to stop, if it was.
    pub fn stopped(&self) -> Option<StopReason> {
        self.shared.interrupt.stopped()
    }

    /// Its stdin pipe, if it was started with one.
    pub fn stdin(&self) -> Option<&StdinPipe> {
        self.shared.stdin.as_ref()
    }

    /// Whether the process has unwound and waits for its sandbox to take it (a pause or snapshot).
    pub fn is_parked(&self) -> bool {
        matches!(*self.slot(), Slot::Parked(_))
    }

    /// Whether its thread is done with it (or it was dropped without running).
    pub fn is_finished(&self) -> bool {
        *self.shared.done.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks until its thread is done with it.
    pub fn wait(&self) {
        let mut done = self.shared.done.lock().unwrap_or_else(|e| e.into_inner());
        while !*done {
            done = self
                .shared
                .changed
                .wait(done)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Like [`Control::wait`], for at most `timeout`; returns whether it is done.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut done = self.shared.done.lock().unwrap_or_else(|e| e.into_inner());
        while !*done {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            done = self
                .shared
                .changed
                .wait_timeout(done, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    // ---- the thread's side ----

    /// Leaves the unwound process for the sandbox and waits for its decision.
    pub(crate) fn park(&self, process: Box<Process>) -> Decision {
        let mut slot = self.slot();
        *slot = Slot::Parked(process);
        self.shared.changed.notify_all();
        loop {
            match std::mem::replace(&mut *slot, Slot::Taken) {
                Slot::Resume(process) => {
                    *slot = Slot::Running;
                    return Decision::Resume(process);
                }
                Slot::Released => {
                    *slot = Slot::Released;
                    return Decision::Released;
                }
                other => *slot = other,
            }
            slot = self.wait_slot(slot);
        }
    }

    /// Hands the process back at the end of its run (`None`: nothing comes back).
    pub(crate) fn finish(&self, process: Option<Box<Process>>) {
        *self.slot() = Slot::Finished(process);
        self.shared.changed.notify_all();
    }

    /// Marks the thread done with the run.
    pub(crate) fn done(&self) {
        if let Some(stdin) = &self.shared.stdin {
            stdin.close();
        }
        *self.shared.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.shared.changed.notify_all();
    }

    // ---- the sandbox's side ----

    /// Asks the process to unwind at its next unwind point.
    pub(crate) fn request_suspend(&self) {
        self.shared.interrupt.request_suspend();
        if let Some(stdin) = &self.shared.stdin {
            stdin.wake();
        }
        // Running wasm sees the request at its next epoch check; this makes that check come now.
        self.shared.engine.increment_epoch();
    }

    /// Waits until the process parks or finishes, for at most until `deadline`.
    pub(crate) fn wait_parked(&self, deadline: Instant) -> Waited {
        let mut slot = self.slot();
        loop {
            match std::mem::replace(&mut *slot, Slot::Collected) {
                Slot::Parked(process) => {
                    *slot = Slot::Taken;
                    return Waited::Parked(process);
                }
                Slot::Finished(process) => return Waited::Finished(process),
                other => *slot = other,
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Waited::TimedOut;
            };
            slot = self
                .shared
                .changed
                .wait_timeout(slot, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The process, if the run has finished and left it (or `Some(None)` when it left nothing).
    pub(crate) fn take_finished(&self) -> Option<Option<Box<Process>>> {
        let mut slot = self.slot();
        match std::mem::replace(&mut *slot, Slot::Collected) {
            Slot::Finished(process) => Some(process),
            other => {
                *slot = other;
                None
            }
        }
    }

    /// Gives a taken process back to its thread, to be rewound and continue.
    pub(crate) fn resume(&self, process: Box<Process>) {
        self.shared.interrupt.clear_suspend();
        *self.slot() = Slot::Resume(process);
        self.shared.changed.notify_all();
    }

    /// Keeps a taken process: its run ends as suspended.
    pub(crate) fn release(&self) {
        *self.slot() = Slot::Released;
        self.shared.changed.notify_all();
    }

    /// Withdraws a suspend request that was not acted on.
    pub(crate) fn clear_suspend(&self) {
        self.shared.interrupt.clear_suspend();
    }
}
