//! A live process: one wasm instance in its own store, with its WASI context; and the host side of the
//! reactor ABI that the `stasis-guest` crate (`guest-sdk/`) defines for guests.
//!
//! ABI, as the host uses it: `stasis_alloc(len) -> ptr` for the request, the host writes the request,
//! `stasis_handle_<name>(ptr, len) -> (resp_ptr << 32) | resp_len`, the host copies the response out and
//! calls `stasis_free(resp_ptr, resp_len)`. The response's first byte is 0 (ok) or 1 (error message).

use wasmtime::{Instance, Memory, Store, Trap, TypedFunc, Val};

use crate::template::Template;
use crate::wasi::{ProcExit, WasiCtx};

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
    /// The guest returned a response that does not follow the ABI (bad pointer, bad status byte).
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
}

impl Process {
    /// Calls the reactor handler `name` with `request` and returns its response payload. A CPU deadline of
    /// `deadline_ticks` epochs applies to the whole call.
    pub(crate) fn call(
        &mut self,
        name: &str,
        request: &[u8],
        deadline_ticks: u64,
        cpu_limit: std::time::Duration,
        max_response: u64,
    ) -> Result<Vec<u8>, CallError> {
        if self.poisoned {
            return Err(CallError::Poisoned(self.pid));
        }
        let alloc: TypedFunc<i32, i32> = self.typed("stasis_alloc")?;
        let free: TypedFunc<(i32, i32), ()> = self.typed("stasis_free")?;
        let handler: TypedFunc<(i32, i32), i64> = self.typed(&format!("stasis_handle_{name}"))?;
        let memory = self.memory()?;
        let len =
            i32::try_from(request.len()).map_err(|_| CallError::AllocFailed(request.len()))?;

        crate::instantiate::arm_deadline(&mut self.store, deadline_ticks, cpu_limit);
        let _cpu = self.store.data().limits.usage().running();
        let outcome = (|| {
            let ptr = alloc.call(&mut self.store, len)?;
            if ptr == 0 && len > 0 {
                return Ok(Err(CallError::AllocFailed(request.len())));
            }
            if memory
                .write(&mut self.store, ptr as u32 as usize, request)
                .is_err()
            {
                return Ok(Err(CallError::BadResponse(
                    "stasis_alloc returned a pointer outside memory".into(),
                )));
            }
            let packed = handler.call(&mut self.store, (ptr, len))?;
            let (resp_ptr, resp_len) = ((packed as u64 >> 32) as u32, packed as u64 as u32);
            if u64::from(resp_len) > max_response {
                return Ok(Err(CallError::ResponseTooLarge {
                    size: resp_len.into(),
                    limit: max_response,
                }));
            }
            // Decoded straight from guest memory: one copy of the payload, no zero-fill, no shift.
            let start = resp_ptr as usize;
            let response = memory
                .data(&self.store)
                .get(start..start + resp_len as usize)
                .map(decode_response);
            let Some(response) = response else {
                return Ok(Err(CallError::BadResponse(format!(
                    "response at {resp_ptr:#x}+{resp_len} lies outside memory"
                ))));
            };
            free.call(&mut self.store, (resp_ptr as i32, resp_len as i32))?;
            Ok(response)
        })();
        match outcome {
            Ok(result) => result,
            Err(error) => Err(self.classify_trap(error, cpu_limit)),
        }
    }

    /// Calls export `name` with plain wasm values under a CPU deadline of `deadline_ticks` epochs.
    pub(crate) fn invoke(
        &mut self,
        name: &str,
        params: &[Val],
        deadline_ticks: u64,
        cpu_limit: std::time::Duration,
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
        cpu_limit: std::time::Duration,
    ) -> CallError {
        self.poisoned = true;
        if let Some(exit) = error.downcast_ref::<ProcExit>() {
            return CallError::Exited(exit.0);
        }
        if matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            return CallError::Timeout(cpu_limit);
        }
        CallError::Trap(error)
    }

    /// The instance's exported function `name` with the given signature.
    fn typed<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
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
