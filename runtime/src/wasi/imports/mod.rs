//! Registration of every `wasi_snapshot_preview1` import, one file per area. Each import borrows the guest's
//! exported memory and the [`WasiCtx`] together, runs a plain function returning a [`GuestResult`], and turns
//! its errno into the guest's return value; only `proc_exit` and a guest without memory trap.

mod args_env;
mod clock;
mod fd;
mod path;
mod poll;
mod proc_misc;
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
    Ok(())
}

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
    Ok(match f(&mut mem, get(data)) {
        Ok(()) => 0,
        Err(e) => e.raw(),
    })
}

/// Guest `u32` values arrive as `i32`; this reinterprets the bits.
pub(crate) fn u(v: i32) -> u32 {
    v as u32
}
