//! `args_*` and `environ_*`: the program's arguments and environment, as NUL-terminated strings.

use wasmtime::{Caller, Linker};

use super::{Getter, run, u};
use crate::wasi::MODULE;
use crate::wasi::errno::{Errno, GuestResult};
use crate::wasi::memory::GuestMemory;

pub(super) fn add<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: Getter<T>,
) -> wasmtime::Result<()> {
    linker.func_wrap(
        MODULE,
        "args_get",
        move |mut c: Caller<'_, T>, argv: i32, buf: i32| {
            run(&mut c, get, |m, ctx| {
                write_strings(
                    m,
                    ctx.args.iter().map(|a| a.as_bytes().to_vec()),
                    u(argv),
                    u(buf),
                )
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "args_sizes_get",
        move |mut c: Caller<'_, T>, count: i32, size: i32| {
            run(&mut c, get, |m, ctx| {
                write_sizes(m, ctx.args.iter().map(|a| a.len()), u(count), u(size))
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "environ_get",
        move |mut c: Caller<'_, T>, env: i32, buf: i32| {
            run(&mut c, get, |m, ctx| {
                write_strings(
                    m,
                    ctx.env.iter().map(|(k, v)| format!("{k}={v}").into_bytes()),
                    u(env),
                    u(buf),
                )
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "environ_sizes_get",
        move |mut c: Caller<'_, T>, count: i32, size: i32| {
            run(&mut c, get, |m, ctx| {
                write_sizes(
                    m,
                    ctx.env.iter().map(|(k, v)| k.len() + v.len() + 1),
                    u(count),
                    u(size),
                )
            })
        },
    )?;
    Ok(())
}

/// Writes each string NUL-terminated at `buf`, and its address into the pointer array at `ptrs`.
fn write_strings(
    m: &mut GuestMemory<'_>,
    items: impl Iterator<Item = Vec<u8>>,
    ptrs: u32,
    buf: u32,
) -> GuestResult<()> {
    let mut at = buf;
    for (i, mut s) in items.enumerate() {
        let slot = u32::try_from(i)
            .ok()
            .and_then(|i| i.checked_mul(4))
            .and_then(|o| ptrs.checked_add(o));
        m.write_u32(slot.ok_or(Errno::Fault)?, at)?;
        s.push(0);
        m.write(at, &s)?;
        at = u32::try_from(s.len())
            .ok()
            .and_then(|l| at.checked_add(l))
            .ok_or(Errno::Fault)?;
    }
    Ok(())
}

/// Writes the number of strings and the bytes they need with their NULs.
fn write_sizes(
    m: &mut GuestMemory<'_>,
    lens: impl Iterator<Item = usize>,
    count: u32,
    size: u32,
) -> GuestResult<()> {
    let (mut n, mut total) = (0usize, 0usize);
    for l in lens {
        n += 1;
        total += l + 1;
    }
    m.write_u32(count, u32::try_from(n).map_err(|_| Errno::Overflow)?)?;
    m.write_u32(size, u32::try_from(total).map_err(|_| Errno::Overflow)?)
}
