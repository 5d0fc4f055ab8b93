//! `clock_res_get` and `clock_time_get`: the virtual monotonic clock and the host's realtime clock.

use wasmtime::{Caller, Linker};

use super::{Getter, run, u};
use crate::wasi::MODULE;
use crate::wasi::WasiCtx;
use crate::wasi::clocks::{RESOLUTION_NS, realtime_now};
use crate::wasi::errno::{Errno, GuestResult};
use crate::wasi::types::clockid;

pub(super) fn add<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: Getter<T>,
) -> wasmtime::Result<()> {
    linker.func_wrap(
        MODULE,
        "clock_res_get",
        move |mut c: Caller<'_, T>, id: i32, out: i32| {
            run(&mut c, get, |m, _| {
                check_clock(u(id))?;
                m.write_u64(u(out), RESOLUTION_NS)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "clock_time_get",
        move |mut c: Caller<'_, T>, id: i32, _precision: i64, out: i32| {
            run(&mut c, get, |m, ctx| {
                let now = now(ctx, u(id))?;
                m.write_u64(u(out), now)
            })
        },
    )?;
    Ok(())
}

/// Realtime and monotonic exist; the CPU-time clocks are `EBADF` (wasmtime-wasi's answer), others `EINVAL`.
fn check_clock(id: u32) -> GuestResult<()> {
    match id {
        clockid::REALTIME | clockid::MONOTONIC => Ok(()),
        clockid::PROCESS_CPUTIME | clockid::THREAD_CPUTIME => Err(Errno::Badf),
        _ => Err(Errno::Inval),
    }
}

/// Current time of clock `id`.
pub(crate) fn now(ctx: &mut WasiCtx, id: u32) -> GuestResult<u64> {
    check_clock(id)?;
    Ok(if id == clockid::REALTIME {
        realtime_now()
    } else {
        ctx.clock.now()
    })
}
