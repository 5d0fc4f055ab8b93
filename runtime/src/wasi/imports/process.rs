//! The `stasis` imports ([`crate::wasi::process`]): pipes, and starting, waiting for and stopping the
//! sandbox's other processes through its [`ProcessHost`](crate::wasi::process::ProcessHost). A process
//! without one (a module run outside a sandbox, by `stasis run`) gets `ENOSYS`.

use wasmtime::{Caller, Linker};

use super::{Getter, run, u};
use crate::wasi::ctx::{FdEntry, Handle, WasiCtx};
use crate::wasi::errno::{Errno, GuestResult};
use crate::wasi::memory::GuestMemory;
use crate::wasi::pipe::{PIPE_CAPACITY, Pipe, Wake, waker};
use crate::wasi::process::{ChildStdio, MAX_SPAWN_REQUEST, MODULE, SpawnRequest, WAIT_NOHANG};
use crate::wasi::{PendingCall, SuspendEntry, suspend_enter, suspend_unwind};

pub(super) fn add<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: Getter<T>,
) -> wasmtime::Result<()> {
    linker.func_wrap(MODULE, "pipe", move |mut c: Caller<'_, T>, out: i32| {
        if let SuspendEntry::Unwound = suspend_enter(&mut c, get, |_| retry("pipe"))? {
            return Ok(0);
        }
        run(&mut c, get, |m, ctx| pipe(m, ctx, u(out)))
    })?;
    linker.func_wrap(
        MODULE,
        "proc_spawn",
        move |mut c: Caller<'_, T>, req: i32, len: i32, out: i32| {
            if let SuspendEntry::Unwound = suspend_enter(&mut c, get, |_| retry("proc_spawn"))? {
                return Ok(0);
            }
            run(&mut c, get, |m, ctx| {
                // Every argument is checked before a process exists that a failure would leave behind.
                m.slice(u(out), 4)?;
                let pid = spawn(m, ctx, u(req), u(len))?;
                m.write_u32(u(out), pid)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "proc_wait",
        move |mut c: Caller<'_, T>, pid: i32, flags: i32, pid_out: i32, status_out: i32| {
            if let SuspendEntry::Unwound = suspend_enter(&mut c, get, |_| retry("proc_wait"))? {
                return Ok(0);
            }
            let mut suspended = false;
            let errno = run(&mut c, get, |m, ctx| {
                let host = ctx.processes.clone().ok_or(Errno::Nosys)?;
                let which = u32::try_from(pid).ok();
                let block = u(flags) & WAIT_NOHANG == 0;
                let wake = waker(ctx.interrupt.clone(), ctx.suspendable());
                match host.wait(ctx.pid, which, block, &wake)? {
                    Ok(reaped) => {
                        m.write_u32(u(pid_out), reaped.pid)?;
                        m.write_u32(u(status_out), reaped.status as u32)
                    }
                    Err(Wake::Suspend) => {
                        suspended = true;
                        Ok(())
                    }
                    Err(Wake::Interrupted) => Err(Errno::Intr),
                }
            })?;
            if suspended {
                suspend_unwind(&mut c, get, retry("proc_wait"))?;
                return Ok(0);
            }
            Ok(errno)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "proc_kill",
        move |mut c: Caller<'_, T>, pid: i32, signal: i32| {
            if let SuspendEntry::Unwound = suspend_enter(&mut c, get, |_| retry("proc_kill"))? {
                return Ok(0);
            }
            run(&mut c, get, |_, ctx| {
                let host = ctx.processes.clone().ok_or(Errno::Nosys)?;
                let pid = u32::try_from(pid).map_err(|_| Errno::Srch)?;
                let signal = u32::try_from(signal).map_err(|_| Errno::Inval)?;
                host.kill(pid, signal)
            })
        },
    )?;
    Ok(())
}

/// The pending call of a `stasis` import that unwound before doing anything: re-issued as it was.
fn retry(import: &str) -> PendingCall {
    PendingCall::Retry {
        import: import.into(),
    }
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
