//! Registration of every `wasi_snapshot_preview1` import, one file per area. Each import borrows the guest's
//! exported memory and the [`WasiCtx`] together, runs a plain function returning a [`GuestResult`], and turns
//! its errno into the guest's return value; only `proc_exit`, a guest without memory, and a guest stopped from
//! outside ([`crate::wasi::Stopped`], checked after every call so one woken from a blocking call ends there)
//! trap.

mod args_env;
mod clock;
mod fd;
mod path;
mod poll;
mod proc_misc;
mod process;
mod sock;

use wasmtime::{Caller, Extern, Linker};

use super::WasiCtx;
use super::errno::GuestResult;
use super::memory::GuestMemory;

/// Accessor from a store's data to its [`WasiCtx`].
pub(crate) type Getter<T> = fn(&mut T) -> &mut WasiCtx;

/// Registers every preview1 import in `linker`, reaching the context of a store through `get`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut WasiCtx,
) -> wasmtime::Result<()> {
    args_env::add(linker, get)?;
    clock::add(linker, get)?;
    fd::add(linker, get)?;
    path::add(linker, get)?;
    poll::add(linker, get)?;
    proc_misc::add(linker, get)?;
    sock::add(linker, get)?;
    process::add(linker, get)?;
    Ok(())
}

/// Makes `linker` (one allowing shadowing) offer WasmEdge's `sock_accept(fd, out_fd)` instead of preview
/// 1's, for modules that import that shape ([`wants_wasmedge_accept`]).
pub(crate) fn add_wasmedge_accept<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut WasiCtx,
) -> wasmtime::Result<()> {
    sock::add_wasmedge_accept(linker, get)
}

pub(crate) use sock::wants_wasmedge_accept;

/// Runs `f` with the guest's memory and context and returns its errno (0 on success) to the guest.
pub(crate) fn run<T>(
    caller: &mut Caller<'_, T>,
    get: Getter<T>,
    f: impl FnOnce(&mut GuestMemory<'_>, &mut WasiCtx) -> GuestResult<()>,
) -> wasmtime::Result<i32> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        wasmtime::bail!(
            "the guest does not export a memory named \"memory\", which WASI imports need"
        );
    };
    let (bytes, data) = memory.data_and_store_mut(caller);
    let mut mem = GuestMemory::new(bytes);
    let ctx = get(data);
    let errno = match f(&mut mem, ctx) {
        Ok(()) => 0,
        Err(e) => e.raw(),
    };
    if let Some(reason) = ctx.stopped() {
        return Err(wasmtime::Error::new(crate::wasi::Stopped(reason)));
    }
    Ok(errno)
}

/// What an unwind-point import's body did: it ran (its errno is the guest's answer), or a wait of
/// its was cut short by a suspend request before it had done anything.
pub(crate) enum Ran {
    /// It ran.
    Done,
    /// It was asked to suspend while it waited: the import unwinds and is re-issued whole.
    Suspended,
}

/// Runs unwind-point import `import` (see [`crate::wasi::suspend`]): it unwinds at once when a pause
/// asks, or else runs `f` like [`run`]; when `f` reports its wait cut short ([`Ran::Suspended`]) it
/// unwinds then. Either way the rewind re-issues the call as it was.
pub(crate) fn run_unwind_point<T>(
    caller: &mut Caller<'_, T>,
    get: Getter<T>,
    import: &str,
    f: impl FnOnce(&mut GuestMemory<'_>, &mut WasiCtx) -> GuestResult<Ran>,
) -> wasmtime::Result<i32> {
    let retry = || crate::wasi::PendingCall::Retry {
        import: import.into(),
    };
    if let crate::wasi::SuspendEntry::Unwound =
        crate::wasi::suspend_enter(caller, get, |_| retry())?
    {
        return Ok(0);
    }
    let mut suspended = false;
    let errno = run(caller, get, |m, ctx| {
        suspended = matches!(f(m, ctx)?, Ran::Suspended);
        Ok(())
    })?;
    if suspended {
        crate::wasi::suspend_unwind(caller, get, retry())?;
        return Ok(0);
    }
    Ok(errno)
}

/// Guest `u32` values arrive as `i32`; this reinterprets the bits.
pub(crate) fn u(v: i32) -> u32 {
    v as u32
}
