//! `poll_oneoff`: clock subscriptions sleep on the (virtual) clocks; fd subscriptions on files and stdio are
//! always ready, because reads and writes on them never block longer than the host's own I/O; a pipe's or
//! a connected socket's are ready when it has bytes or end-of-file (read) or room or no reader (write), a
//! listening socket's read when a connection waits to be accepted; those are waited for, looked at again
//! every [`crate::wasi::pipe::WAIT_SLICE`] of the sleep.
//!
//! It is an unwind point: a sleep cut short by a suspend request unwinds, and the rewind re-issues it with
//! the monotonic time it began at, so relative timeouts count from the original start — a `sleep 3` paused
//! after 1 s sleeps 2 s more after the resume (the virtual monotonic clock does not advance while paused).
//!
//! A pending interrupt (Ctrl-C on a PTY, see [`crate::wasi::Interrupt::request_sigint`]) is consumed by the
//! next call, which answers `EINTR` — at once, or when it comes during the sleep — so a guest can poll for
//! one cheaply with a zero timeout.

use std::time::{Duration, Instant};

use wasmtime::{Caller, Linker, Trap};

use super::clock::now;
use super::{Getter, run, u};
use crate::wasi::clocks::realtime_now;
use crate::wasi::ctx::{Handle, WasiCtx};
use crate::wasi::errno::{Errno, GuestResult};
use crate::wasi::interrupt::Woken;
use crate::wasi::memory::GuestMemory;
use crate::wasi::types::clockid;
use crate::wasi::types::{EVENT_SIZE, SUBSCRIPTION_CLOCK_ABSTIME, SUBSCRIPTION_SIZE, eventtype};
use crate::wasi::{MODULE, PendingCall, SuspendEntry, suspend_enter, suspend_unwind};

pub(super) fn add<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: Getter<T>,
) -> wasmtime::Result<()> {
    linker.func_wrap(
        MODULE,
        "poll_oneoff",
        move |mut c: Caller<'_, T>, subs: i32, events: i32, n: i32, out: i32| {
            let started = match suspend_enter(&mut c, get, |ctx| PendingCall::Poll {
                started_ns: ctx.clock.now(),
            })? {
                SuspendEntry::Unwound => return Ok(0),
                SuspendEntry::Run(Some(PendingCall::Poll { started_ns })) => Some(started_ns),
                SuspendEntry::Run(_) => None,
            };
            let mut ended = None;
            let errno = run(&mut c, get, |m, ctx| {
                match poll_oneoff(m, ctx, u(subs), u(events), u(n), started)? {
                    Polled::Ready(count) => m.write_u32(u(out), count),
                    other => {
                        ended = Some(other);
                        Ok(())
                    }
                }
            })?;
            match ended {
                Some(Polled::DeadlinePassed) => Err(Trap::Interrupt.into()),
                Some(Polled::Suspended { started_ns }) => {
                    suspend_unwind(&mut c, get, PendingCall::Poll { started_ns })?;
                    Ok(0)
                }
                _ => Ok(errno),
            }
        },
    )?;
    Ok(())
}

/// Most subscriptions one `poll_oneoff` call may pass.
pub const MAX_SUBSCRIPTIONS: u32 = 4096;

/// How a `poll_oneoff` call ended.
enum Polled {
    /// This many events were written.
    Ready(u32),
    /// The call's deadline came before any event: the caller traps as for a CPU timeout.
    DeadlinePassed,
    /// A suspend request came before any event: the caller unwinds, to re-issue the call from this start.
    Suspended {
        /// The monotonic clock when the call (first) began.
        started_ns: u64,
    },
}

/// When a clock subscription is due.
#[derive(Clone, Copy)]
enum Due {
    /// At this value of the virtual monotonic clock: absolute monotonic deadlines, and every relative
    /// timeout (counted from the call's start, whatever its clock, so that paused time is not counted).
    Monotonic(u64),
    /// At this realtime instant (an absolute realtime deadline).
    Realtime(u64),
}

/// An event to report.
struct Event {
    userdata: u64,
    error: Errno,
    kind: u8,
    nbytes: u64,
}

fn poll_oneoff(
    m: &mut GuestMemory<'_>,
    ctx: &mut WasiCtx,
    subs: u32,
    events: u32,
    n: u32,
    started: Option<u64>,
) -> GuestResult<Polled> {
    // wasmtime-wasi refuses an empty subscription list: it would sleep forever. The upper bound keeps the
    // host's bookkeeping small whatever count a guest passes.
    if n == 0 || n > MAX_SUBSCRIPTIONS {
        return Err(Errno::Inval);
    }
    // Both arrays are checked before anything is allocated from the guest's count.
    let in_len = n
        .checked_mul(SUBSCRIPTION_SIZE as u32)
        .ok_or(Errno::Fault)?;
    let out_len = n.checked_mul(EVENT_SIZE as u32).ok_or(Errno::Fault)?;
    m.slice(subs, in_len)?;
    m.slice(events, out_len)?;
    let started_ns = started.unwrap_or_else(|| ctx.clock.now());
    if ctx.interrupt.as_ref().is_some_and(|i| i.take_sigint()) {
        return Err(Errno::Intr);
    }

    let mut ready = Vec::new();
    let mut timers: Vec<(Due, u64)> = Vec::new();
    // Pipe subscriptions that are not ready yet: (fd, kind, userdata).
    let mut waiting: Vec<(u32, u8, u64)> = Vec::new();
    for i in 0..n {
        let at = subs + i * SUBSCRIPTION_SIZE as u32;
        let userdata = m.read_u64(at)?;
        match m.read_u8(at + 8)? {
            eventtype::CLOCK => {
                let id = m.read_u32(at + 16)?;
                let timeout = m.read_u64(at + 24)?;
                let flags = m.read_u16(at + 40)?;
                match now(ctx, id) {
                    Ok(_) if flags & SUBSCRIPTION_CLOCK_ABSTIME == 0 => {
                        timers.push((Due::Monotonic(started_ns.saturating_add(timeout)), userdata))
                    }
                    Ok(_) if id == clockid::REALTIME => {
                        timers.push((Due::Realtime(timeout), userdata))
                    }
                    Ok(_) => timers.push((Due::Monotonic(timeout), userdata)),
                    Err(e) => ready.push(Event {
                        userdata,
                        error: e,
                        kind: eventtype::CLOCK,
                        nbytes: 0,
                    }),
                }
            }
            kind @ (eventtype::FD_READ | eventtype::FD_WRITE) => {
                let fd = m.read_u32(at + 16)?;
                // A closed fd fails the whole call, as in wasmtime-wasi.
                ctx.entry(fd)?;
                match fd_readiness(ctx, fd, kind) {
                    Some((error, nbytes)) => ready.push(Event {
                        userdata,
                        error,
                        kind,
                        nbytes,
                    }),
                    None => waiting.push((fd, kind, userdata)),
                }
            }
            _ => return Err(Errno::Inval),
        }
    }

    if ready.is_empty() {
        // Sleep until the earliest deadline, then report every timer that is due.
        loop {
            let mut wait = u64::MAX;
            for &(due, userdata) in &timers {
                let (current, deadline) = match due {
                    Due::Monotonic(d) => (ctx.clock.now(), d),
                    Due::Realtime(d) => (realtime_now(), d),
                };
                if current >= deadline {
                    ready.push(Event {
                        userdata,
                        error: Errno::Success,
                        kind: eventtype::CLOCK,
                        nbytes: 0,
                    });
                } else {
                    wait = wait.min(deadline - current);
                }
            }
            for &(fd, kind, userdata) in &waiting {
                if let Some((error, nbytes)) = fd_readiness(ctx, fd, kind) {
                    ready.push(Event {
                        userdata,
                        error,
                        kind,
                        nbytes,
                    });
                }
            }
            if !ready.is_empty() || ctx.stopped().is_some() {
                break;
            }
            let mut nap = Duration::from_nanos(wait);
            if !waiting.is_empty() {
                nap = nap.min(crate::wasi::pipe::WAIT_SLICE);
            }
            if let Some(deadline) = ctx.deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left < nap {
                    match ctx.sleep(left) {
                        Woken::Suspend => return Ok(Polled::Suspended { started_ns }),
                        Woken::Sigint => return interrupted(ctx),
                        Woken::Elapsed => return Ok(Polled::DeadlinePassed),
                    }
                }
            }
            match ctx.sleep(nap) {
                Woken::Suspend => return Ok(Polled::Suspended { started_ns }),
                Woken::Sigint => return interrupted(ctx),
                Woken::Elapsed => {}
            }
        }
    }

    for (i, ev) in ready.iter().enumerate() {
        let mut b = [0u8; EVENT_SIZE];
        b[0..8].copy_from_slice(&ev.userdata.to_le_bytes());
        b[8..10].copy_from_slice(&(ev.error as u16).to_le_bytes());
        b[10] = ev.kind;
        b[16..24].copy_from_slice(&ev.nbytes.to_le_bytes());
        m.write(events + (i * EVENT_SIZE) as u32, &b)?;
    }
    Ok(Polled::Ready(ready.len() as u32))
}

/// A sleep cut short by an interrupt: it is consumed, and the call answers `EINTR`.
fn interrupted(ctx: &WasiCtx) -> GuestResult<Polled> {
    if let Some(i) = &ctx.interrupt {
        i.take_sigint();
    }
    Err(Errno::Intr)
}

/// Readiness of an fd subscription: an error for fds that cannot be read or written that way, else ready with
/// the bytes left before end of file (files), the bytes buffered or the room left (pipes), or 0; `None` for
/// a pipe that is not ready yet.
fn fd_readiness(ctx: &mut WasiCtx, fd: u32, kind: u8) -> Option<(Errno, u64)> {
    let Ok(e) = ctx.entry(fd) else {
        return Some((Errno::Badf, 0));
    };
    Some(match (&e.handle, kind) {
        (Handle::File(f), eventtype::FD_READ) => {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            (Errno::Success, len.saturating_sub(e.offset))
        }
        (Handle::File(_), _) | (Handle::Stdin(_), eventtype::FD_READ) => (Errno::Success, 0),
        (Handle::Stdout(_) | Handle::Stderr(_), eventtype::FD_WRITE) => (Errno::Success, 0),
        (Handle::Pipe(end), eventtype::FD_READ) if !end.is_write() => match end.readable() {
            (true, n) => (Errno::Success, n as u64),
            (false, _) => return None,
        },
        (Handle::Pipe(end), eventtype::FD_WRITE) if end.is_write() => match end.writable() {
            (true, n) => (Errno::Success, n as u64),
            (false, _) => return None,
        },
        (Handle::Socket(socket), eventtype::FD_READ) => match socket.readable() {
            (true, n) => (Errno::Success, n as u64),
            (false, _) => return None,
        },
        (Handle::Socket(socket), _) => match socket.writable() {
            (true, n) => (Errno::Success, n as u64),
            (false, _) => return None,
        },
        _ => (Errno::Badf, 0),
    })
}
