//! Instantiation: a store with its WASI context and limits, and an instance of a template in it.
//!
//! Two ways in: a *fresh* instance runs the module's own initialisation (the start function that
//! instrumentation took out of the start section, then `_initialize` for reactors); a *restored* instance
//! runs nothing at all, because its memory and globals are about to be overwritten with saved ones.

use std::sync::Arc;

use wasmtime::{Instance, Linker, Store, StoreLimitsBuilder};

use crate::engine::StasisEngine;
use crate::limits::SandboxLimits;
use crate::process::{Process, ProcessData};
use crate::template::Template;
use crate::usage::{Limiter, SandboxUsage};
use crate::wasi::WasiCtx;

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The sandbox is paused; resume it first.
    #[error("the sandbox is paused")]
    Paused,
    /// The sandbox already holds as many processes as its limits allow.
    #[error("the sandbox already runs {0} processes, its limit")]
    TooManyProcesses(u32),
    /// Reactor processes are started from reactor templates only.
    #[error("template {0} is a command module; run it instead of spawning it")]
    NotAReactor(String),
    /// The WASI context could not be set up (e.g. the sandbox directory is gone).
    #[error("could not set up the process's WASI context")]
    Wasi(#[from] crate::wasi::WasiSetupError),
    /// Instantiation failed (e.g. the memory limit is below the module's minimum).
    #[error("could not instantiate the module")]
    Instantiate(#[source] wasmtime::Error),
    /// The module's initialisation trapped or exceeded its CPU time.
    #[error("the module's initialisation failed")]
    Init(#[source] crate::process::CallError),
}

/// A store for one process, with its limits applied.
pub(crate) fn new_store(
    engine: &StasisEngine,
    limits: &SandboxLimits,
    wasi: WasiCtx,
    usage: &Arc<SandboxUsage>,
) -> Store<ProcessData> {
    let store_limits = StoreLimitsBuilder::new()
        .memory_size(usize::try_from(limits.max_memory_bytes).unwrap_or(usize::MAX))
        .instances(1)
        .build();
    let mut store = Store::new(
        engine.engine(),
        ProcessData {
            wasi,
            limits: Limiter::new(store_limits, usage.clone()),
        },
    );
    store.limiter(|data| &mut data.limits);
    store.epoch_deadline_trap();
    arm_deadline(
        &mut store,
        engine.ticks_for(limits.cpu_time_per_call),
        limits.cpu_time_per_call,
    );
    store
}

/// Arms the deadline of the next call into a process: `ticks` epochs for guest code, and the same span of
/// wall time for host calls that block (a WASI sleep), which epoch interruption cannot reach.
pub(crate) fn arm_deadline(store: &mut Store<ProcessData>, ticks: u64, limit: std::time::Duration) {
    // A call run outside the sandbox's lock left a callback that counts ticks; this call traps instead.
    store.epoch_deadline_trap();
    store.set_epoch_deadline(ticks);
    store
        .data_mut()
        .wasi
        .set_deadline(std::time::Instant::now().checked_add(limit));
}

/// A linker offering our WASI host to a process's store.
pub(crate) fn linker(engine: &StasisEngine) -> wasmtime::Result<Linker<ProcessData>> {
    let mut linker = Linker::new(engine.engine());
    crate::wasi::add_to_linker(&mut linker, |data: &mut ProcessData| &mut data.wasi)?;
    Ok(linker)
}

/// [`linker`] with WasmEdge's `sock_accept(fd, out_fd)` in place of preview 1's `sock_accept(fd, flags,
/// out_fd)`: the two share a name, so a module gets the linker whose shape its import has.
pub(crate) fn wasmedge_linker(
    linker: &Linker<ProcessData>,
) -> wasmtime::Result<Linker<ProcessData>> {
    let mut linker = linker.clone();
    linker.allow_shadowing(true);
    crate::wasi::add_wasmedge_accept(&mut linker, |data: &mut ProcessData| &mut data.wasi)?;
    Ok(linker)
}

/// Instantiates `template` without running any of its code. Imports were resolved once, when the template
/// was loaded (its `InstancePre`), so this only allocates the instance.
pub(crate) fn instantiate(
    template: &Template,
    store: &mut Store<ProcessData>,
) -> Result<Instance, SpawnError> {
    template
        .inner
        .pre
        .instantiate(&mut *store)
        .map_err(SpawnError::Instantiate)
}

/// Runs a fresh instance's initialisation: the original start function, then `_initialize` if exported.
pub(crate) fn initialize(
    template: &Template,
    store: &mut Store<ProcessData>,
    instance: &Instance,
) -> wasmtime::Result<()> {
    if let Some(start) = &template.inner.layout.start_export {
        instance
            .get_typed_func::<(), ()>(&mut *store, start)?
            .call(&mut *store, ())?;
    }
    if let Ok(init) = instance.get_typed_func::<(), ()>(&mut *store, "_initialize") {
        init.call(&mut *store, ())?;
    }
    Ok(())
}

/// Instantiates `template` as process `pid` of a sandbox with `limits` and `usage` (not initialised), with
/// its own interrupt and the unwind stage's globals handed to its WASI context.
#[allow(clippy::too_many_arguments)]
pub(crate) fn new_process(
    engine: &StasisEngine,
    limits: &SandboxLimits,
    usage: &Arc<SandboxUsage>,
    template: &Template,
    pid: u32,
    label: &str,
    kind: crate::state::ProcessKind,
    mut wasi: WasiCtx,
) -> Result<Process, SpawnError> {
    let interrupt = Arc::new(crate::wasi::Interrupt::new());
    wasi.set_interrupt(interrupt.clone());
    let mut store = new_store(engine, limits, wasi, usage);
    let instance = instantiate(template, &mut store)?;
    crate::sandbox::attach_unwind_globals(template, &mut store, &instance)?;
    Ok(Process {
        pid,
        template: template.clone(),
        store,
        instance,
        poisoned: false,
        label: label.to_owned(),
        kind,
        interrupt,
        suspended: None,
    })
}
