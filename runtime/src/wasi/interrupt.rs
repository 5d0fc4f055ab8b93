//! Stopping a guest from another thread: a guest running wasm code is stopped at its next epoch check (the
//! store's epoch callback asks [`Interrupt::stopped`]), and a guest blocked in a host call — sleeping in
//! `poll_oneoff`, waiting on a stdin pipe — is woken and trapped as that call returns.

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
    /// The sandbox is being paused: a command's wasm stack cannot be captured, so it is ended (137).
    Pause,
    /// The sandbox is being killed or dropped (137).
    SandboxGone,
}

impl StopReason {
    /// The exit code a shell reports for a process ended this way (128 + the signal's number).
    pub fn exit_code(self) -> i32 {
        match self {
            Self::Terminate => 128 + 15,
            Self::Kill | Self::Pause | Self::SandboxGone => 128 + 9,
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Kill => "killed by SIGKILL",
            Self::Terminate => "terminated by SIGTERM",
            Self::Pause => {
                "ended because the sandbox was paused (a running command cannot be paused)"
            }
            Self::SandboxGone => "ended because the sandbox was killed",
        })
    }
}

/// The trap a stopped guest ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the guest was stopped: {0}")]
pub struct Stopped(pub StopReason);

/// A stop request shared between the thread running a guest and the threads that may stop it.
#[derive(Debug, Default)]
pub struct Interrupt {
    reason: Mutex<Option<StopReason>>,
    wake: Condvar,
}

impl Interrupt {
    /// A new, untriggered interrupt.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the guest to stop; the first reason given wins. Returns whether this call set it.
    pub fn trigger(&self, reason: StopReason) -> bool {
        let mut current = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if current.is_some() {
            return false;
        }
        *current = Some(reason);
        self.wake.notify_all();
        true
    }

    /// Why the guest was asked to stop, if it was.
    pub fn stopped(&self) -> Option<StopReason> {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps for `duration`, or less if the guest is asked to stop meanwhile.
    pub(crate) fn sleep(&self, duration: Duration) {
        let deadline = Instant::now().checked_add(duration);
        let mut reason = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        while reason.is_none() {
            let wait = match deadline {
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(wait) if !wait.is_zero() => wait,
                    _ => return,
                },
                // A sleep too long to represent: wait in long steps until stopped.
                None => Duration::from_secs(3600),
            };
            reason = self
                .wake
                .wait_timeout(reason, wait)
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
        let thread = std::thread::spawn(move || sleeper.sleep(Duration::from_secs(3600)));
        assert!(interrupt.trigger(StopReason::Terminate));
        assert!(!interrupt.trigger(StopReason::Kill));
        thread.join().expect("the sleeper woke");
        assert_eq!(interrupt.stopped(), Some(StopReason::Terminate));
        assert_eq!(StopReason::Terminate.exit_code(), 143);
    }
}
