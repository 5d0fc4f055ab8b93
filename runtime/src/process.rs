//! A live process: one wasm instance in its own store, with its WASI context; entering its exports with the
//! unwind protocol's host side (a call that unwinds, a rewind of a suspended call); and the host side of the
//! reactor ABI that the `stasis-guest` crate (`guest-sdk/`) defines for guests.
//!
//! ABI, as the host uses it: `stasis_alloc(len) -> ptr` for the request, the host writes the request,
//! `stasis_handle_<name>(ptr, len) -> (resp_ptr << 32) | resp_len`, the host copies the response out and
//! calls `stasis_free(resp_ptr, resp_len)`. The response's first byte is 0 (ok) or 1 (error message). Only
//! the handler itself can be suspended: the request is written before it runs and the response read after.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Instance, Memory, Store, Trap, TypedFunc, Val};

use crate::instrument::unwind::{NORMAL, REQUESTED, REWINDING, UNWINDING};
use crate::running::{Control, Decision};
use crate::state::{GlobalValue, ProcessKind, SuspendedCall};
use crate::template::Template;
use crate::wasi::{Interrupt, ProcExit, WasiCtx};

/// What every process's store carries.
pub(crate) struct ProcessData {
    /// The process's WASI host state.
    pub(crate) wasi: WasiCtx,
    /// The memory and table bounds enforced by wasmtime, and the sandbox's usage account.
    pub(crate) limits: crate::usage::Limiter,
}

/// One live instance of a module inside a sandbox.
pub(crate) struct Process {
    pub(crate) pid: u32,
    pub(crate) template: Template,
    pub(crate) store: Store<ProcessData>,
    pub(crate) instance: Instance,
    /// Set when a call trapped: the guest may have been stopped halfway through changing its own state
    /// (a lock held, the shadow stack pointer moved), so it must not be called again.
    pub(crate) poisoned: bool,
    /// The embedder's name for the process (see [`crate::state::ProcessState::label`]).
    pub(crate) label: String,
    /// Whether it is a reactor or a command.
    pub(crate) kind: ProcessKind,
    /// Stops or suspends it from another thread (also in its WASI context).
    pub(crate) interrupt: Arc<Interrupt>,
    /// The call it is suspended in: it unwound, and the call continues when it is rewound.
    pub(crate) suspended: Option<SuspendedCall>,
}

/// The status byte of a successful response.
const STATUS_OK: u8 = 0;
/// The status byte of an error response.
const STATUS_ERROR: u8 = 1;

/// Why a call into a process failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The sandbox is paused; resume it first.
    #[error("the sandbox is paused")]
    Paused,
    /// No process with this id is alive in the sandbox.
    #[error("no process {0} in this sandbox")]
    NoSuchProcess(u32),
    /// The sandbox has no main reactor process (its template is a command module).
    #[error("the sandbox's template is a command module: it has no process to call")]
    NoMainProcess,
    /// The process is a command, not a reactor with handlers.
    #[error("process {0} is a command; only reactors have handlers to call")]
    NotAReactor(u32),
    /// The process is running a call on another thread; wait for it ([`crate::Sandbox::running`]).
    #[error("process {0} is busy with another call")]
    Busy(u32),
    /// An earlier call trapped, so the process's state can no longer be trusted.
    #[error("process {0} was stopped by an earlier trap and must be restarted")]
    Poisoned(u32),
    /// The guest does not export what the reactor ABI needs.
    #[error("the guest does not export `{0}` (is it built with stasis-guest?)")]
    MissingExport(String),
    /// The arguments do not match the export's signature.
    #[error("bad arguments: {0}")]
    BadArguments(String),
    /// The guest's handler reported an error.
    #[error("the guest handler failed: {0}")]
    Guest(String),
    /// The guest ran longer than its CPU time limit per call; the process must be restarted.
    #[error("the call exceeded its CPU time limit of {0:?}")]
    Timeout(std::time::Duration),
    /// The guest called `proc_exit` while handling the call; the process has ended.
    #[error("the guest exited with code {0} during the call")]
    Exited(i32),
    /// The guest trapped (a bug in the guest, or a limit reached); the process must be restarted.
    #[error("the guest trapped")]
    Trap(#[source] wasmtime::Error),
    /// The guest could not allocate the request buffer.
    #[error("the guest could not allocate {0} bytes for the request")]
    AllocFailed(usize),
    /// The guest returned a malformed response (bad pointer, bad status byte).
    #[error("the guest returned a malformed response: {0}")]
    BadResponse(String),
    /// The response is larger than the sandbox allows.
    #[error("the guest's response of {size} bytes exceeds the limit of {limit} bytes")]
    ResponseTooLarge {
        /// Declared size of the response.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The sandbox was paused while the call ran: the call was suspended with it and finishes after the
    /// sandbox resumes, but its answer no longer comes here.
    #[error(
        "the sandbox was paused while the call ran; the call was saved with it and finishes after the resume"
    )]
    Suspended,
    /// The call was stopped from outside (its sandbox killed, or a pause that could not suspend it).
    #[error("the call was stopped: {0}")]
    Stopped(crate::wasi::StopReason),
}

/// How one entry into an export ended.
pub(crate) enum Entered {
    /// It returned these values.
    Returned(Vec<Val>),
    /// It unwound: its frames are in the frame buffer, and it continues when entered again rewinding.
    Unwound,
    /// It trapped (or exited, or was stopped).
    Failed(wasmtime::Error),
}

/// How a run of an export that may unwind ended ([`run_suspendable`]).
pub(crate) enum RunEnd {
    /// It returned these values.
    Returned(Box<Process>, Vec<Val>),
    /// It trapped.
    Failed(Box<Process>, wasmtime::Error),
    /// It unwound and its sandbox kept it: the process lives on in a blob.
    Released,
}

/// Runs `export(args)` of `process` — continuing its suspended call when `rewind` — to the end: whenever
/// it unwinds, the process is parked with `control` for its sandbox to capture, then rewound (after a
/// snapshot) or released (after a pause).
pub(crate) fn run_suspendable(
    mut process: Box<Process>,
    export: &str,
    args: &[Val],
    mut rewind: bool,
    control: &Control,
    mut budget: impl FnMut(&mut Process) -> (u64, u64),
) -> RunEnd {
    loop {
        match process.enter(export, args, rewind) {
            Entered::Returned(values) => return RunEnd::Returned(process, values),
            Entered::Failed(error) => return RunEnd::Failed(process, error),
            Entered::Unwound => {
                let (cpu_used_ms, wall_used_ms) = budget(&mut process);
                let stdin = process.store.data().wasi.stdin_pipe().map(|pipe| {
                    let (unread, closed) = pipe.snapshot();
                    crate::state::PipeState { unread, closed }
                });
                process.suspended = Some(SuspendedCall {
                    export: export.to_owned(),
                    args: args.iter().filter_map(val_to_state).collect(),
                    cpu_used_ms,
                    wall_used_ms,
                    stdin,
                });
                match control.park(process) {
                    Decision::Resume(back) => {
                        process = back;
                        process.suspended = None;
                        rewind = true;
                    }
                    Decision::Released => return RunEnd::Released,
                }
            }
        }
    }
}

/// A wasm value as plain data (reference values have none).
pub(crate) fn val_to_state(value: &Val) -> Option<GlobalValue> {
    Some(match value {
        Val::I32(v) => GlobalValue::I32(*v),
        Val::I64(v) => GlobalValue::I64(*v),
        Val::F32(bits) => GlobalValue::F32(*bits),
        Val::F64(bits) => GlobalValue::F64(*bits),
        Val::V128(v) => GlobalValue::V128(v.as_u128()),
        _ => return None,
    })
}

/// Plain data back into a wasm value.
pub(crate) fn state_to_val(value: &GlobalValue) -> Val {
    match *value {
        GlobalValue::I32(v) => Val::I32(v),
        GlobalValue::I64(v) => Val::I64(v),
        GlobalValue::F32(bits) => Val::F32(bits),
        GlobalValue::F64(bits) => Val::F64(bits),
        GlobalValue::V128(v) => Val::V128(wasmtime::V128::from(v)),
    }
}

impl Process {
    /// Loads the unwind stage's countdown (see [`crate::instrument::InstrumentOptions::countdown`]): the
    /// process unwinds at its `n`-th unwind point from now, as if a pause had been asked for there.
    /// Fails for a module instrumented without a countdown.
    pub(crate) fn set_countdown(&mut self, n: u32) -> Result<(), CallError> {
        let countdown = self
            .store
            .data()
            .wasi
            .unwind_globals()
            .and_then(|g| g.countdown)
            .ok_or_else(|| CallError::MissingExport("the unwind countdown".into()))?;
        countdown
            .set(&mut self.store, Val::I32(n as i32))
            .map_err(CallError::Trap)
    }

    /// The unwind stage's state global, for modules that have one.
    fn unwind_state(&mut self) -> Option<i32> {
        let globals = self.store.data().wasi.unwind_globals()?;
        globals.state.get(&mut self.store).i32()
    }

    fn set_unwind_state(&mut self, state: i32) -> wasmtime::Result<()> {
        if let Some(globals) = self.store.data().wasi.unwind_globals() {
            globals.state.set(&mut self.store, Val::I32(state))?;
        }
        Ok(())
    }

    /// Calls export `name` with `args`, letting the call be suspended; with `rewind`, the call is the
    /// continuation of the one the process is suspended in (its frames are reloaded).
    pub(crate) fn enter(&mut self, name: &str, args: &[Val], rewind: bool) -> Entered {
        let Some(func) = self.instance.get_func(&mut self.store, name) else {
            return Entered::Failed(wasmtime::Error::msg(format!(
                "the guest has no export `{name}`"
            )));
        };
        let mut results: Vec<Val> = func
            .ty(&self.store)
            .results()
            .map(|t| Val::default_for_ty(&t).unwrap_or(Val::I32(0)))
            .collect();
        if rewind && let Err(error) = self.set_unwind_state(REWINDING) {
            return Entered::Failed(error);
        }
        self.store.data_mut().wasi.set_suspendable(true);
        let cpu = self.store.data().limits.usage().running();
        let outcome = func.call(&mut self.store, args, &mut results);
        drop(cpu);
        self.store.data_mut().wasi.set_suspendable(false);
        if let Err(error) = outcome {
            if self.unwind_state() == Some(UNWINDING) {
                // It trapped while saving its frames: the only trap the unwind path has is a full buffer.
                let limit = self
                    .template
                    .inner
                    .layout
                    .unwind
                    .as_ref()
                    .map_or(0, |u| u64::from(u.frame_memory_max_pages) << 16);
                return Entered::Failed(error.context(format!(
                    "the call stack is too deep to be saved: its frames do not fit the frame buffer of {} MiB",
                    limit >> 20
                )));
            }
            return Entered::Failed(error);
        }
        match self.unwind_state() {
            Some(UNWINDING) => Entered::Unwound,
            Some(REQUESTED) => {
                // Asked to unwind, but it returned first: the request is void.
                match self.set_unwind_state(NORMAL) {
                    Ok(()) => Entered::Returned(results),
                    Err(error) => Entered::Failed(error),
                }
            }
            Some(REWINDING) => Entered::Failed(wasmtime::Error::msg(
                "the call returned while still rewinding (its saved frames do not match its module)",
            )),
            _ => Entered::Returned(results),
        }
    }

    /// Allocates the request buffer of a handler call and writes `request` into it.
    pub(crate) fn write_request(&mut self, request: &[u8]) -> Result<(i32, i32), CallError> {
        let alloc: TypedFunc<i32, i32> = self.typed("stasis_alloc")?;
        let memory = self.memory()?;
        let len =
            i32::try_from(request.len()).map_err(|_| CallError::AllocFailed(request.len()))?;
        let ptr = alloc
            .call(&mut self.store, len)
            .map_err(|e| self.classify_trap(e, Duration::ZERO))?;
        if ptr == 0 && len > 0 {
            return Err(CallError::AllocFailed(request.len()));
        }
        if memory
            .write(&mut self.store, ptr as u32 as usize, request)
            .is_err()
        {
            return Err(CallError::BadResponse(
                "stasis_alloc returned a pointer outside memory".into(),
            ));
        }
        Ok((ptr, len))
    }

    /// Reads (and frees) the response a handler returned as `packed`.
    pub(crate) fn read_response(
        &mut self,
        packed: i64,
        max_response: u64,
        cpu_limit: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let free: TypedFunc<(i32, i32), ()> = self.typed("stasis_free")?;
        let memory = self.memory()?;
        let (resp_ptr, resp_len) = ((packed as u64 >> 32) as u32, packed as u64 as u32);
        if u64::from(resp_len) > max_response {
            return Err(CallError::ResponseTooLarge {
                size: resp_len.into(),
                limit: max_response,
            });
        }
        // Decoded straight from guest memory: one copy of the payload, no zero-fill, no shift.
        let start = resp_ptr as usize;
        let response = memory
            .data(&self.store)
            .get(start..start + resp_len as usize)
            .map(decode_response);
        let Some(response) = response else {
            return Err(CallError::BadResponse(format!(
                "response at {resp_ptr:#x}+{resp_len} lies outside memory"
            )));
        };
        free.call(&mut self.store, (resp_ptr as i32, resp_len as i32))
            .map_err(|e| self.classify_trap(e, cpu_limit))?;
        response
    }

    /// Calls export `name` with plain wasm values under a CPU deadline of `deadline_ticks` epochs.
    pub(crate) fn invoke(
        &mut self,
        name: &str,
        params: &[Val],
        deadline_ticks: u64,
        cpu_limit: Duration,
    ) -> Result<Vec<Val>, CallError> {
        if self.poisoned {
            return Err(CallError::Poisoned(self.pid));
        }
        let func = self
            .instance
            .get_func(&mut self.store, name)
            .ok_or_else(|| CallError::MissingExport(name.to_owned()))?;
        let ty = func.ty(&self.store);
        let well_typed = ty.params().len() == params.len()
            && params
                .iter()
                .zip(ty.params())
                .all(|(value, ty)| value.matches_ty(&self.store, &ty).unwrap_or(false));
        if !well_typed {
            // Checked before any guest code runs, so the process stays usable.
            return Err(CallError::BadArguments(format!(
                "{name} has the signature {ty:?}"
            )));
        }
        let mut results: Vec<Val> = ty
            .results()
            .map(|t| Val::default_for_ty(&t).unwrap_or(Val::I32(0)))
            .collect();
        crate::instantiate::arm_deadline(&mut self.store, deadline_ticks, cpu_limit);
        let _cpu = self.store.data().limits.usage().running();
        match func.call(&mut self.store, params, &mut results) {
            Ok(()) => Ok(results),
            Err(error) => Err(self.classify_trap(error, cpu_limit)),
        }
    }

    /// Turns a trap from a guest call into the matching error, poisoning the process.
    pub(crate) fn classify_trap(
        &mut self,
        error: wasmtime::Error,
        cpu_limit: Duration,
    ) -> CallError {
        self.poisoned = true;
        if let Some(exit) = error.downcast_ref::<ProcExit>() {
            return CallError::Exited(exit.0);
        }
        if let Some(stopped) = error.downcast_ref::<crate::wasi::Stopped>() {
            return CallError::Stopped(stopped.0);
        }
        if matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            return CallError::Timeout(cpu_limit);
        }
        CallError::Trap(error)
    }

    /// The instance's exported function `name` with the given signature.
    pub(crate) fn typed<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
        &mut self,
        name: &str,
    ) -> Result<TypedFunc<P, R>, CallError> {
        self.instance
            .get_typed_func::<P, R>(&mut self.store, name)
            .map_err(|_| CallError::MissingExport(name.to_owned()))
    }

    /// The instance's exported `memory`, which the ABI exchanges buffers through.
    fn memory(&mut self) -> Result<Memory, CallError> {
        self.instance
            .get_memory(&mut self.store, "memory")
            .ok_or_else(|| CallError::MissingExport("memory".into()))
    }
}

/// Splits a response into its status byte and payload.
fn decode_response(response: &[u8]) -> Result<Vec<u8>, CallError> {
    match response.split_first() {
        Some((&STATUS_OK, payload)) => Ok(payload.to_vec()),
        Some((&STATUS_ERROR, message)) => Err(CallError::Guest(
            String::from_utf8_lossy(message).into_owned(),
        )),
        Some((other, _)) => Err(CallError::BadResponse(format!(
            "unknown status byte {other}"
        ))),
        None => Err(CallError::BadResponse("empty response".into())),
    }
}

/// Milliseconds since `start`, for the budgets a suspended call carries.
pub(crate) fn millis_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}
