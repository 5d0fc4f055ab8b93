//! Stopping or suspending a guest from another thread: a guest running wasm code is stopped at its next
//! epoch check (the store's epoch callback asks [`Interrupt::stopped`]), and a guest blocked in a host call
//! — sleeping in `poll_oneoff`, waiting on a stdin pipe — is woken and trapped as that call returns.
//!
//! A *suspend* request ([`Interrupt::request_suspend`]) asks a guest whose module the unwind stage rewrote
//! to unwind instead (see [`crate::instrument::unwind`]): the epoch callback turns it into the guest's
//! `REQUESTED` state, and a blocking host call that is woken by it unwinds rather than returns.
//!
//! An *interrupt* ([`Interrupt::request_sigint`], what Ctrl-C on a PTY sends) does not stop the guest: it is
//! a pending flag that the guest's next blocking or polling host call (`poll_oneoff`, a read waiting for
//! stdin) consumes and answers with `EINTR`, so a guest that cares (the `sh` guest's interactive mode) can
//! abandon the running command and carry on, and a guest that does not sees a call it may retry.

use std::fmt;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Why a guest was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `SIGKILL` from a client: exit code 137.
    Kill,
    /// `SIGTERM` from a client: a guest cannot catch signals, so it ends at once, with exit code 143.
    Terminate,
    /// `SIGINT` sent to a program by another process of its sandbox (`kill -INT`): it ends at once, with
    /// exit code 130.
    Interrupt,
    /// The sandbox is being paused, and the command could not be suspended (its module cannot be paused
    /// mid-call, or it did not unwind in time), so it is ended (137).
    Pause,
    /// The sandbox is being killed or dropped (137).
    SandboxGone,
}

impl StopReason {
    /// The exit code a shell reports for a process ended this way (128 + the signal's number).
    pub fn exit_code(self) -> i32 {
        match self {
            Self::Terminate => 128 + 15,
            Self::Interrupt => 128 + 2,
            Self::Kill | Self::Pause | Self::SandboxGone => 128 + 9,
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Kill => "killed by SIGKILL",
            Self::Terminate => "terminated by SIGTERM",
            Self::Interrupt => "interrupted by SIGINT",
            Self::Pause => {
                "ended because the sandbox was paused and the command could not be suspended"
            }
            Self::SandboxGone => "ended because the sandbox was killed",
        })
    }
}

/// The trap a stopped guest ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the guest was stopped: {0}")]
pub struct Stopped(pub StopReason);

/// A stop or suspend request shared between the thread running a guest and the threads that may stop it.
#[derive(Debug, Default)]
pub struct Interrupt {
    state: Mutex<Requests>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct Requests {
    stop: Option<StopReason>,
    suspend: bool,
    sigint: bool,
}

/// How an interruptible sleep ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woken {
    /// The time was up (or a stop was asked for: the caller checks [`Interrupt::stopped`]).
    Elapsed,
    /// A suspend was asked for before the time was up.
    Suspend,
    /// An interrupt is pending (the caller consumes it with [`Interrupt::take_sigint`]).
    Sigint,
}

impl Interrupt {
    /// A new, untriggered interrupt.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Requests> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the guest to stop; the first reason given wins. Returns whether this call set it.
    pub fn trigger(&self, reason: StopReason) -> bool {
        let mut current = self.lock();
        if current.stop.is_some() {
            return false;
        }
        current.stop = Some(reason);
        self.wake.notify_all();
        true
    }

    /// Why the guest was asked to stop, if it was.
    pub fn stopped(&self) -> Option<StopReason> {
        self.lock().stop
    }

    /// Asks the guest to unwind at its next unwind point, and wakes it if it sleeps in a host call.
    pub fn request_suspend(&self) {
        self.lock().suspend = true;
        self.wake.notify_all();
    }

    /// Withdraws a suspend request (the guest unwound, or is to carry on).
    pub fn clear_suspend(&self) {
        self.lock().suspend = false;
    }

    /// Whether a suspend is asked for.
    pub fn suspend_requested(&self) -> bool {
        self.lock().suspend
    }

    /// Makes an interrupt pending (Ctrl-C) and wakes the guest if it sleeps in a host call.
    pub fn request_sigint(&self) {
        self.lock().sigint = true;
        self.wake.notify_all();
    }

    /// Consumes a pending interrupt: whether there was one.
    pub fn take_sigint(&self) -> bool {
        std::mem::take(&mut self.lock().sigint)
    }

    /// Sleeps for `duration`, or less if the guest is asked to stop meanwhile, or — when `suspendable` —
    /// to suspend.
    pub(crate) fn sleep(&self, duration: Duration, suspendable: bool) -> Woken {
        let deadline = Instant::now().checked_add(duration);
        let mut state = self.lock();
        loop {
            if state.stop.is_some() {
                return Woken::Elapsed;
            }
            if suspendable && state.suspend {
                return Woken::Suspend;
            }
            if state.sigint {
                return Woken::Sigint;
            }
            let wait = match deadline {
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(wait) if !wait.is_zero() => wait,
                    _ => return Woken::Elapsed,
                },
                // A sleep too long to represent: wait in long steps until stopped.
                None => Duration::from_secs(3600),
            };
            state = self
                .wake
                .wait_timeout(state, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn first_reason_wins_and_wakes_a_sleeper() {
        let interrupt = Arc::new(Interrupt::new());
        let sleeper = interrupt.clone();
        let thread = std::thread::spawn(move || sleeper.sleep(Duration::from_secs(3600), true));
        assert!(interrupt.trigger(StopReason::Terminate));
        assert!(!interrupt.trigger(StopReason::Kill));
        assert_eq!(thread.join().expect("the sleeper woke"), Woken::Elapsed);
        assert_eq!(interrupt.stopped(), Some(StopReason::Terminate));
        assert_eq!(StopReason::Terminate.exit_code(), 143);
    }

    #[test]
    fn a_suspend_request_wakes_only_a_suspendable_sleep() {
        let interrupt = Arc::new(Interrupt::new());
        interrupt.request_suspend();
        assert_eq!(
            interrupt.sleep(Duration::from_secs(3600), true),
            Woken::Suspend
        );
        assert_eq!(
            interrupt.sleep(Duration::from_millis(5), false),
            Woken::Elapsed
        );
        interrupt.clear_suspend();
        assert!(!interrupt.suspend_requested());
    }

    #[test]
    fn an_interrupt_wakes_a_sleeper_once_and_does_not_stop() {
        let interrupt = Arc::new(Interrupt::new());
        let sleeper = interrupt.clone();
        let thread = std::thread::spawn(move || sleeper.sleep(Duration::from_secs(3600), false));
        interrupt.request_sigint();
        assert_eq!(thread.join().expect("the sleeper woke"), Woken::Sigint);
        assert!(interrupt.take_sigint());
        assert!(!interrupt.take_sigint(), "an interrupt is consumed once");
        assert_eq!(interrupt.stopped(), None);
    }
}
