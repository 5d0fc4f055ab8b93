//! The `stasis` imports ([`crate::wasi::process`]): pipes, and starting, waiting for and stopping the
//! sandbox's other processes through its [`ProcessHost`](crate::wasi::process::ProcessHost). A process
//! without one (a module run outside a sandbox, by `stasis run`) gets `ENOSYS`.

use wasmtime::{Caller, Linker};

use super::{Getter, Ran, run_unwind_point, u};
use crate::wasi::ctx::{FdEntry, Handle, WasiCtx};
use crate::wasi::errno::{Errno, GuestResult};
use crate::wasi::memory::GuestMemory;
use crate::wasi::pipe::{PIPE_CAPACITY, Pipe, Wake, waker};
use crate::wasi::process::{ChildStdio, MAX_SPAWN_REQUEST, MODULE, SpawnRequest, WAIT_NOHANG};

pub(super) fn add<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: Getter<T>,
) -> wasmtime::Result<()> {
    linker.func_wrap(MODULE, "pipe", move |mut c: Caller<'_, T>, out: i32| {
        run_unwind_point(&mut c, get, "pipe", |m, ctx| {
            pipe(m, ctx, u(out)).map(|()| Ran::Done)
        })
    })?;
    linker.func_wrap(
        MODULE,
        "proc_spawn",
        move |mut c: Caller<'_, T>, req: i32, len: i32, out: i32| {
            run_unwind_point(&mut c, get, "proc_spawn", |m, ctx| {
                // Every argument is checked before a process exists that a failure would leave behind.
                m.slice(u(out), 4)?;
                let pid = spawn(m, ctx, u(req), u(len))?;
                m.write_u32(u(out), pid).map(|()| Ran::Done)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "proc_wait",
        move |mut c: Caller<'_, T>, pid: i32, flags: i32, pid_out: i32, status_out: i32| {
            run_unwind_point(&mut c, get, "proc_wait", |m, ctx| {
                let host = ctx.processes.clone().ok_or(Errno::Nosys)?;
                let which = u32::try_from(pid).ok();
                let block = u(flags) & WAIT_NOHANG == 0;
                let wake = waker(ctx.interrupt.clone(), ctx.suspendable());
                match host.wait(ctx.pid, which, block, &wake)? {
                    Ok(reaped) => {
                        m.write_u32(u(pid_out), reaped.pid)?;
                        m.write_u32(u(status_out), reaped.status as u32)?;
                        Ok(Ran::Done)
                    }
                    Err(Wake::Suspend) => Ok(Ran::Suspended),
                    Err(Wake::Interrupted) => Err(Errno::Intr),
                }
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "proc_kill",
        move |mut c: Caller<'_, T>, pid: i32, signal: i32| {
            run_unwind_point(&mut c, get, "proc_kill", |_, ctx| {
                let host = ctx.processes.clone().ok_or(Errno::Nosys)?;
                let pid = u32::try_from(pid).map_err(|_| Errno::Srch)?;
                let signal = u32::try_from(signal).map_err(|_| Errno::Inval)?;
                host.kill(pid, signal).map(|()| Ran::Done)
            })
        },
    )?;
    Ok(())
}

fn pipe(m: &mut GuestMemory<'_>, ctx: &mut WasiCtx, out: u32) -> GuestResult<()> {
    m.slice(out, 8)?;
    if ctx.fds.len() + 2 > ctx.limits.max_open_fds {
        return Err(Errno::Mfile);
    }
    let (read, write) = Pipe::open(PIPE_CAPACITY);
    let r = ctx.insert(FdEntry::stdio(Handle::Pipe(read)))?;
    let w = ctx.insert(FdEntry::stdio(Handle::Pipe(write)))?;
    m.write_u32(out, r)?;
    m.write_u32(out + 4, w)
}

fn spawn(m: &mut GuestMemory<'_>, ctx: &mut WasiCtx, req: u32, len: u32) -> GuestResult<u32> {
    let host = ctx.processes.clone().ok_or(Errno::Nosys)?;
    if len > MAX_SPAWN_REQUEST {
        return Err(Errno::TooBig);
    }
    let request: SpawnRequest =
        serde_json::from_slice(m.slice(req, len)?).map_err(|_| Errno::Inval)?;
    if request.program.is_empty() || request.args.is_empty() {
        return Err(Errno::Inval);
    }
    let mut stdio: ChildStdio = [None, None, None];
    for (slot, fd) in stdio
        .iter_mut()
        .zip([request.stdin, request.stdout, request.stderr])
    {
        if let Some(fd) = fd {
            *slot = Some(ctx.entry(fd)?.duplicate()?);
        }
    }
    host.spawn(ctx.pid, request, stdio)
}
