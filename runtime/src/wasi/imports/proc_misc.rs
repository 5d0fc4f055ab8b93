//! `proc_exit`, `proc_raise`, `sched_yield` and `random_get`.

use wasmtime::{Caller, Linker};

use super::{Getter, run, u};
use crate::wasi::errno::Errno;
use crate::wasi::{MODULE, PendingCall, ProcExit, SuspendEntry, suspend_enter};

pub(super) fn add<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: Getter<T>,
) -> wasmtime::Result<()> {
    linker.func_wrap(
        MODULE,
        "proc_exit",
        |_: Caller<'_, T>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::new(ProcExit(code)))
        },
    )?;
    // Signals do not exist in a sandbox; wasmtime-wasi answers ENOTSUP too.
    linker.func_wrap(
        MODULE,
        "proc_raise",
        move |mut c: Caller<'_, T>, _sig: i32| run(&mut c, get, |_, _| Err(Errno::Notsup)),
    )?;
    // An unwind point: a guest that yields in a loop can be suspended there.
    linker.func_wrap(MODULE, "sched_yield", move |mut c: Caller<'_, T>| {
        let retry = |_: &mut crate::wasi::WasiCtx| PendingCall::Retry {
            import: "sched_yield".into(),
        };
        if let SuspendEntry::Unwound = suspend_enter(&mut c, get, retry)? {
            return Ok(0);
        }
        run(&mut c, get, |_, _| {
            std::thread::yield_now();
            Ok(())
        })
    })?;
    linker.func_wrap(
        MODULE,
        "random_get",
        move |mut c: Caller<'_, T>, buf: i32, len: i32| {
            run(&mut c, get, |m, _| {
                // Filled in place: the guest's length is bounded by its memory, never allocated by us.
                let out = m.slice_mut(u(buf), u(len))?;
                getrandom::fill(out).map_err(|_| Errno::Io)
            })
        },
    )?;
    Ok(())
}
