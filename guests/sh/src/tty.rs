//! Interrupts (Ctrl-C on the host's PTY) as the shell sees them.
//!
//! A single-process wasm guest gets no signals: the host makes an interrupt *pending* and the guest's next
//! `poll_oneoff` or blocked stdin read answers `EINTR`, consuming it (see the runtime's
//! `Interrupt::request_sigint`). The shell turns that into a sticky flag of its own, checked between
//! commands and loop iterations ([`interrupted`], a zero-timeout `poll_oneoff` when the flag is not set yet)
//! and cleared by whoever handles it: the interactive loop, which returns to the prompt with status 130.
//! `sleep` waits with its own `poll_oneoff` ([`sleep`]) because `std::thread::sleep` panics on `EINTR`.

use std::cell::Cell;
use std::time::Duration;

thread_local! {
    /// Set once an interrupt was seen, until [`take`] clears it. Per thread so that unit tests running
    /// side by side do not see each other's (the guest has one thread).
    static INTERRUPTED: Cell<bool> = const { Cell::new(false) };
}

/// The exit status of a command ended by an interrupt (128 + SIGINT).
pub const INTERRUPT_STATUS: i32 = 130;

/// Whether an interrupt came and was not handled yet, asking the host when none was seen.
pub fn interrupted() -> bool {
    if INTERRUPTED.get() {
        return true;
    }
    if host::wait(0) == Waited::Interrupted {
        note();
        return true;
    }
    false
}

/// Records an interrupt seen elsewhere (a read of stdin that answered `EINTR`).
pub fn note() {
    INTERRUPTED.set(true);
}

/// Clears the flag: whether an interrupt had been seen.
pub fn take() -> bool {
    INTERRUPTED.replace(false)
}

/// Sleeps for `d` unless interrupted first: whether it was.
pub fn sleep(d: Duration) -> bool {
    if interrupted() {
        return true;
    }
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    match host::wait(ns) {
        Waited::Interrupted => {
            note();
            true
        }
        Waited::Elapsed => false,
    }
}

/// How a wait on the host's clock ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waited {
    /// The time was up (or the host refused the wait, which is treated alike).
    Elapsed,
    /// The host answered `EINTR`: an interrupt came.
    Interrupted,
}

#[cfg(target_os = "wasi")]
mod host {
    use super::Waited;

    /// `__WASI_ERRNO_INTR`.
    const EINTR: i32 = 27;
    /// `__WASI_CLOCKID_MONOTONIC`.
    const MONOTONIC: u32 = 1;

    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    unsafe extern "C" {
        /// Same wasm signature as libstd's own import of it.
        fn poll_oneoff(subs: i32, events: i32, n: i32, nevents: i32) -> i32;
    }

    /// A `subscription` (48 bytes) or `event` (32 bytes), aligned for its `u64` fields.
    #[repr(C, align(8))]
    struct Buf<const N: usize>([u8; N]);

    /// Waits `ns` nanoseconds on the monotonic clock (0: just asks whether an interrupt is pending).
    pub(super) fn wait(ns: u64) -> Waited {
        let mut sub = Buf([0u8; 48]);
        // userdata 0, tag 0 (clock), clock id at 16, relative timeout at 24, precision 0, flags 0.
        sub.0[16..20].copy_from_slice(&MONOTONIC.to_le_bytes());
        sub.0[24..32].copy_from_slice(&ns.to_le_bytes());
        let mut event = Buf([0u8; 32]);
        let mut count: usize = 0;
        // SAFETY: the pointers are to live buffers of the sizes WASI reads and writes for one subscription.
        let errno = unsafe {
            poll_oneoff(
                sub.0.as_ptr() as i32,
                event.0.as_mut_ptr() as i32,
                1,
                &mut count as *mut usize as i32,
            )
        };
        if errno == EINTR {
            Waited::Interrupted
        } else {
            Waited::Elapsed
        }
    }
}

#[cfg(not(target_os = "wasi"))]
mod host {
    use super::Waited;

    /// Outside wasm (the unit tests) no host interrupts anything: a plain sleep.
    pub(super) fn wait(ns: u64) -> Waited {
        if ns > 0 {
            std::thread::sleep(std::time::Duration::from_nanos(ns));
        }
        Waited::Elapsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_noted_interrupt_stays_until_taken() {
        assert!(!take());
        note();
        assert!(interrupted());
        assert!(
            sleep(Duration::from_secs(3600)),
            "an interrupted sleep does not start"
        );
        assert!(take());
        assert!(!interrupted());
        assert!(!sleep(Duration::from_millis(1)));
    }
}
