//! The WASI host's side of the unwind protocol ([`crate::instrument::unwind`]): every unwind-point import
//! (`poll_oneoff`, `fd_read`, `fd_write`, `sched_yield`) asks [`enter`] first whether it is being re-issued
//! by a rewind, should unwind instead of running, or simply runs; a blocking wait that a suspend request
//! cuts short unwinds with [`unwind`], recording what it was doing as a [`PendingCall`] — plain data saved
//! with the process — so that the rewind re-issues it exactly (a sleep sleeps only what was left of it).
//!
//! The state machine lives in one guest global (exported like every other): the host reads and writes it
//! here and in the epoch callback (`crate::command::arm`), nowhere else.

use serde::{Deserialize, Serialize};
use wasmtime::{Caller, Global, Val};

use super::WasiCtx;
use crate::instrument::unwind::{NORMAL, REQUESTED, REWINDING, UNWINDING};

/// The unwind stage's globals of one instance.
#[derive(Clone, Copy, Debug)]
pub struct UnwindGlobals {
    /// The state global.
    pub state: Global,
    /// The countdown global, in modules instrumented with one.
    pub countdown: Option<Global>,
}

/// The host call a process was in when it unwound, re-issued when it is rewound.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PendingCall {
    /// `poll_oneoff`, begun when the virtual monotonic clock read `started_ns`: its relative timeouts
    /// count from then, so the time slept before the pause is not slept again.
    Poll {
        /// The monotonic clock when the call began.
        started_ns: u64,
    },
    /// Another unwind-point import (`fd_read` of an empty pipe, `fd_write`, `sched_yield`), re-issued as
    /// it was: it had done nothing yet.
    Retry {
        /// The import's name.
        import: String,
    },
}

/// What the WASI context knows of the unwind protocol.
#[derive(Debug, Default)]
pub(crate) struct SuspendState {
    /// The instance's unwind globals; `None` for a module the unwind stage did not rewrite.
    pub globals: Option<UnwindGlobals>,
    /// Whether the host can take a suspended call back now (it runs a command or a handler call it knows
    /// how to suspend); otherwise requests are ignored and imports simply run.
    pub enabled: bool,
    /// The host call the process unwound from, until a rewind re-issues it.
    pub pending: Option<PendingCall>,
}

/// What an unwind-point import does.
pub(crate) enum Entry {
    /// Run, re-issuing this pending call when the import is reached by a rewind.
    Run(Option<PendingCall>),
    /// The process is unwinding now: return a dummy result at once.
    Unwound,
}

fn state_of<T>(caller: &mut Caller<'_, T>, globals: UnwindGlobals) -> i32 {
    globals.state.get(&mut *caller).i32().unwrap_or(NORMAL)
}

/// Decides what unwind-point import `import` does; `pending` describes the call should it unwind now.
pub(crate) fn enter<T>(
    caller: &mut Caller<'_, T>,
    get: fn(&mut T) -> &mut WasiCtx,
    pending: impl FnOnce(&mut WasiCtx) -> PendingCall,
) -> wasmtime::Result<Entry> {
    let Some(globals) = get(caller.data_mut()).suspend.globals else {
        return Ok(Entry::Run(None));
    };
    let state = state_of(caller, globals);
    if state == REWINDING {
        // The innermost frame of a rewind: the stack is back, the call runs for real now.
        globals.state.set(&mut *caller, Val::I32(NORMAL))?;
        return Ok(Entry::Run(get(caller.data_mut()).suspend.pending.take()));
    }
    if !get(caller.data_mut()).suspend.enabled {
        return Ok(Entry::Run(None));
    }
    let mut now = state == REQUESTED || get(caller.data_mut()).suspend_requested();
    if let Some(countdown) = globals.countdown {
        let left = countdown.get(&mut *caller).i32().unwrap_or(0);
        if left > 0 {
            countdown.set(&mut *caller, Val::I32(left - 1))?;
            now |= left == 1;
        }
    }
    if now {
        let call = pending(get(caller.data_mut()));
        unwind(caller, get, call)?;
        return Ok(Entry::Unwound);
    }
    Ok(Entry::Run(None))
}

/// Starts unwinding from inside an import that had not done anything yet.
pub(crate) fn unwind<T>(
    caller: &mut Caller<'_, T>,
    get: fn(&mut T) -> &mut WasiCtx,
    call: PendingCall,
) -> wasmtime::Result<()> {
    let ctx = get(caller.data_mut());
    let Some(globals) = ctx.suspend.globals else {
        wasmtime::bail!("an import unwound in a module without the unwind stage");
    };
    ctx.suspend.pending = Some(call);
    globals.state.set(&mut *caller, Val::I32(UNWINDING))?;
    Ok(())
}

impl WasiCtx {
    /// Gives the context its instance's unwind globals (right after instantiation).
    pub fn set_unwind_globals(&mut self, globals: UnwindGlobals) {
        self.suspend.globals = Some(globals);
    }

    /// The instance's unwind globals, if its module has them.
    pub fn unwind_globals(&self) -> Option<UnwindGlobals> {
        self.suspend.globals
    }

    /// Lets (or stops letting) the running call be suspended.
    pub fn set_suspendable(&mut self, enabled: bool) {
        self.suspend.enabled = enabled;
    }

    /// Whether the running call may be suspended.
    pub fn suspendable(&self) -> bool {
        self.suspend.enabled && self.suspend.globals.is_some()
    }

    /// Whether a suspend is asked for (and could be honoured).
    pub(crate) fn suspend_requested(&self) -> bool {
        self.suspendable()
            && self
                .interrupt
                .as_ref()
                .is_some_and(|i| i.suspend_requested())
    }

    /// The host call the process unwound from, if it did from one.
    pub fn pending_call(&self) -> Option<&PendingCall> {
        self.suspend.pending.as_ref()
    }
}
