//! The socket calls: a sandbox has no sockets, so an open fd is `ENOTSOCK` and a closed one `EBADF`.

use wasmtime::{Caller, Linker};

use super::{Getter, run, u};
use crate::wasi::MODULE;
use crate::wasi::WasiCtx;
use crate::wasi::errno::{Errno, GuestResult};

fn not_a_socket(ctx: &mut WasiCtx, fd: i32) -> GuestResult<()> {
    ctx.entry(u(fd))?;
    Err(Errno::Notsock)
}

pub(super) fn add<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: Getter<T>,
) -> wasmtime::Result<()> {
    linker.func_wrap(
        MODULE,
        "sock_accept",
        move |mut c: Caller<'_, T>, fd: i32, _flags: i32, _out: i32| {
            run(&mut c, get, |_, ctx| not_a_socket(ctx, fd))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_recv",
        move |mut c: Caller<'_, T>,
              fd: i32,
              _iovs: i32,
              _n: i32,
              _flags: i32,
              _len: i32,
              _oflags: i32| { run(&mut c, get, |_, ctx| not_a_socket(ctx, fd)) },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_send",
        move |mut c: Caller<'_, T>, fd: i32, _iovs: i32, _n: i32, _flags: i32, _len: i32| {
            run(&mut c, get, |_, ctx| not_a_socket(ctx, fd))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_shutdown",
        move |mut c: Caller<'_, T>, fd: i32, _how: i32| {
            run(&mut c, get, |_, ctx| not_a_socket(ctx, fd))
        },
    )?;
    Ok(())
}
