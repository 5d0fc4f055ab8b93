//! The `fd_*` imports: reading, writing and describing open fds, the fd table itself and directory listing.

use std::os::unix::fs::FileExt as _;
use std::os::unix::fs::MetadataExt as UnixMeta;
use std::sync::Arc;

use cap_fs_ext::MetadataExt as _;
use wasmtime::{Caller, Linker};

use super::{Getter, Ran, run, run_unwind_point, u};
use crate::wasi::MODULE;
use crate::wasi::ctx::{FdEntry, Handle, WasiCtx, lock};
use crate::wasi::errno::{Errno, GuestResult};
use crate::wasi::memory::GuestMemory;
use crate::wasi::pipe::{PipeRead, PipeWrite, Wake, waker};
use crate::wasi::quota::DiskQuota;
use crate::wasi::stdio::StdinRead;
use crate::wasi::types::{DIRENT_SIZE, FILESTAT_SIZE, fdflags, filetype, fstflags, rights, whence};

pub(super) fn add<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: Getter<T>,
) -> wasmtime::Result<()> {
    linker.func_wrap(
        MODULE,
        "fd_advise",
        move |mut c: Caller<'_, T>, fd: i32, _off: i64, _len: i64, advice: i32| {
            run(&mut c, get, |_, ctx| {
                file(ctx, u(fd))?;
                // Advice is only a hint; the values 0..=5 exist.
                if !(0..=5).contains(&advice) {
                    return Err(Errno::Inval);
                }
                Ok(())
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_allocate",
        move |mut c: Caller<'_, T>, fd: i32, off: i64, len: i64| {
            run(&mut c, get, |_, ctx| {
                fd_allocate(ctx, u(fd), off as u64, len as u64)
            })
        },
    )?;
    linker.func_wrap(MODULE, "fd_close", move |mut c: Caller<'_, T>, fd: i32| {
        run(&mut c, get, |_, ctx| {
            ctx.fds.remove(&u(fd)).map(drop).ok_or(Errno::Badf)
        })
    })?;
    linker.func_wrap(
        MODULE,
        "fd_datasync",
        move |mut c: Caller<'_, T>, fd: i32| run(&mut c, get, |_, ctx| sync(ctx, u(fd), true)),
    )?;
    linker.func_wrap(MODULE, "fd_sync", move |mut c: Caller<'_, T>, fd: i32| {
        run(&mut c, get, |_, ctx| sync(ctx, u(fd), false))
    })?;
    linker.func_wrap(
        MODULE,
        "fd_fdstat_get",
        move |mut c: Caller<'_, T>, fd: i32, out: i32| {
            run(&mut c, get, |m, ctx| fd_fdstat_get(m, ctx, u(fd), u(out)))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_fdstat_set_flags",
        move |mut c: Caller<'_, T>, fd: i32, flags: i32| {
            run(&mut c, get, |_, ctx| {
                fd_fdstat_set_flags(ctx, u(fd), flags as u16)
            })
        },
    )?;
    // Rights cannot be dropped in wasmtime-wasi's preview1 either; it answers ENOTSUP.
    linker.func_wrap(
        MODULE,
        "fd_fdstat_set_rights",
        move |mut c: Caller<'_, T>, _fd: i32, _b: i64, _i: i64| {
            run(&mut c, get, |_, _| Err(Errno::Notsup))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_filestat_get",
        move |mut c: Caller<'_, T>, fd: i32, out: i32| {
            run(&mut c, get, |m, ctx| fd_filestat_get(m, ctx, u(fd), u(out)))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_filestat_set_size",
        move |mut c: Caller<'_, T>, fd: i32, size: i64| {
            run(&mut c, get, |_, ctx| {
                fd_filestat_set_size(ctx, u(fd), size as u64)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_filestat_set_times",
        move |mut c: Caller<'_, T>, fd: i32, atim: i64, mtim: i64, fl: i32| {
            run(&mut c, get, |_, ctx| {
                fd_filestat_set_times(ctx, u(fd), atim as u64, mtim as u64, fl as u16)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_pread",
        move |mut c: Caller<'_, T>, fd: i32, iovs: i32, n: i32, off: i64, out: i32| {
            run(&mut c, get, |m, ctx| {
                let read = read_file(m, ctx, u(fd), u(iovs), u(n), Some(off as u64))?;
                m.write_u32(u(out), read.unwrap_or(0))
            })
        },
    )?;
    // An unwind point: a read waiting for stdin unwinds on a suspend request and is re-issued whole.
    linker.func_wrap(
        MODULE,
        "fd_read",
        move |mut c: Caller<'_, T>, fd: i32, iovs: i32, n: i32, out: i32| {
            run_unwind_point(&mut c, get, "fd_read", |m, ctx| {
                match read_file(m, ctx, u(fd), u(iovs), u(n), None)? {
                    Some(read) => m.write_u32(u(out), read).map(|()| Ran::Done),
                    None => Ok(Ran::Suspended),
                }
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_pwrite",
        move |mut c: Caller<'_, T>, fd: i32, iovs: i32, n: i32, off: i64, out: i32| {
            run(&mut c, get, |m, ctx| {
                let written = write_file(m, ctx, u(fd), u(iovs), u(n), Some(off as u64))?;
                m.write_u32(u(out), written.unwrap_or(0))
            })
        },
    )?;
    // An unwind point: a write waiting for room in a full pipe unwinds on a suspend request and is
    // re-issued whole.
    linker.func_wrap(
        MODULE,
        "fd_write",
        move |mut c: Caller<'_, T>, fd: i32, iovs: i32, n: i32, out: i32| {
            run_unwind_point(&mut c, get, "fd_write", |m, ctx| {
                match write_file(m, ctx, u(fd), u(iovs), u(n), None)? {
                    Some(written) => m.write_u32(u(out), written).map(|()| Ran::Done),
                    None => Ok(Ran::Suspended),
                }
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_prestat_get",
        move |mut c: Caller<'_, T>, fd: i32, out: i32| {
            run(&mut c, get, |m, ctx| {
                let name = prestat_name(ctx, u(fd))?;
                m.write_u32(u(out), 0)?; // tag: directory
                m.write_u32(
                    u(out).wrapping_add(4),
                    u32::try_from(name.len()).map_err(|_| Errno::Overflow)?,
                )
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_prestat_dir_name",
        move |mut c: Caller<'_, T>, fd: i32, buf: i32, len: i32| {
            run(&mut c, get, |m, ctx| {
                let name = prestat_name(ctx, u(fd))?;
                if name.len() > u(len) as usize {
                    return Err(Errno::Nametoolong);
                }
                m.write(u(buf), name.as_bytes())
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_readdir",
        move |mut c: Caller<'_, T>, fd: i32, buf: i32, len: i32, cookie: i64, out: i32| {
            run(&mut c, get, |m, ctx| {
                let used = fd_readdir(m, ctx, u(fd), u(buf), u(len), cookie as u64)?;
                m.write_u32(u(out), used)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_renumber",
        move |mut c: Caller<'_, T>, from: i32, to: i32| {
            run(&mut c, get, |_, ctx| fd_renumber(ctx, u(from), u(to)))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_seek",
        move |mut c: Caller<'_, T>, fd: i32, off: i64, wh: i32, out: i32| {
            run(&mut c, get, |m, ctx| {
                let pos = fd_seek(ctx, u(fd), off, wh)?;
                m.write_u64(u(out), pos)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_tell",
        move |mut c: Caller<'_, T>, fd: i32, out: i32| {
            run(&mut c, get, |m, ctx| {
                let pos = fd_seek(ctx, u(fd), 0, i32::from(whence::CUR))?;
                m.write_u64(u(out), pos)
            })
        },
    )?;
    Ok(())
}

/// The open regular file behind `fd`: `EBADF` for anything else, as in wasmtime-wasi. Stdio is `ESPIPE` where a
/// position is involved, so callers that care map it themselves.
fn file(ctx: &mut WasiCtx, fd: u32) -> GuestResult<&mut FdEntry> {
    let e = ctx.entry(fd)?;
    match e.handle {
        Handle::File(_) => Ok(e),
        _ => Err(Errno::Badf),
    }
}

fn std_file(e: &FdEntry) -> GuestResult<&std::fs::File> {
    match &e.handle {
        Handle::File(f) => Ok(f),
        _ => Err(Errno::Badf),
    }
}

fn quota_of(ctx: &WasiCtx, e_preopen: Option<u32>) -> Option<Arc<DiskQuota>> {
    e_preopen.and_then(|p| ctx.quota(p))
}

/// Resizes `f` to `new_len`, charging or refunding the quota for the difference.
pub(crate) fn resize(
    f: &std::fs::File,
    quota: Option<&DiskQuota>,
    new_len: u64,
) -> GuestResult<()> {
    let old = f.metadata()?.len();
    if let Some(q) = quota
        && new_len > old
    {
        q.reserve_bytes(new_len - old)?;
    }
    if let Err(e) = f.set_len(new_len) {
        if let Some(q) = quota
            && new_len > old
        {
            q.release_bytes(new_len - old);
        }
        return Err(e.into());
    }
    if let Some(q) = quota
        && new_len < old
    {
        q.release_bytes(old - new_len);
    }
    Ok(())
}

fn fd_allocate(ctx: &mut WasiCtx, fd: u32, off: u64, len: u64) -> GuestResult<()> {
    let preopen = file(ctx, fd)?.preopen;
    let quota = quota_of(ctx, preopen);
    let e = file(ctx, fd)?;
    if !e.write {
        return Err(Errno::Badf);
    }
    let end = off.checked_add(len).ok_or(Errno::Fbig)?;
    let f = std_file(e)?;
    if end > f.metadata()?.len() {
        resize(f, quota.as_deref(), end)?;
    }
    Ok(())
}

fn sync(ctx: &mut WasiCtx, fd: u32, data_only: bool) -> GuestResult<()> {
    let e = ctx.entry(fd)?;
    match &e.handle {
        Handle::File(f) if data_only => f.sync_data()?,
        Handle::File(f) => f.sync_all()?,
        // Directory metadata is made durable by its host; nothing the guest could observe differs.
        Handle::Dir(_) => {}
        // Stdio is not a file: EBADF, as wasmtime-wasi answers.
        _ => return Err(Errno::Badf),
    }
    Ok(())
}

fn fd_fdstat_get(m: &mut GuestMemory<'_>, ctx: &mut WasiCtx, fd: u32, out: u32) -> GuestResult<()> {
    let e = ctx.entry(fd)?;
    let (ftype, base, inheriting) = match &e.handle {
        // Captured stdio is never a terminal; wasmtime-wasi reports `unknown` for non-tty stdio.
        Handle::Stdin(_) | Handle::Stdout(_) | Handle::Stderr(_) | Handle::Pipe(_) => {
            (filetype::UNKNOWN, e.rights_base, e.rights_base)
        }
        Handle::Socket(_) => (filetype::SOCKET_STREAM, e.rights_base, e.rights_inheriting),
        Handle::Dir(_) if e.is_preopen => (
            filetype::DIRECTORY,
            rights::PREOPEN_BASE,
            rights::PREOPEN_INHERITING,
        ),
        Handle::Dir(_) | Handle::File(_) => {
            let is_dir = matches!(e.handle, Handle::Dir(_));
            let mut r = rights::ALL;
            if is_dir {
                r &= !(rights::FD_SEEK
                    | rights::FD_FILESTAT_SET_SIZE
                    | rights::PATH_FILESTAT_SET_SIZE);
            }
            if !e.read {
                r &= !(rights::FD_READ | rights::FD_READDIR);
            }
            if !e.write {
                r &= !rights::FD_WRITE;
            }
            (
                if is_dir {
                    filetype::DIRECTORY
                } else {
                    filetype_of_file(e)?
                },
                r,
                r,
            )
        }
    };
    let mut b = [0u8; 24];
    b[0] = ftype;
    b[2..4].copy_from_slice(&e.fdflags.to_le_bytes());
    b[8..16].copy_from_slice(&base.to_le_bytes());
    b[16..24].copy_from_slice(&inheriting.to_le_bytes());
    m.write(out, &b)
}

fn filetype_of_file(e: &FdEntry) -> GuestResult<u8> {
    Ok(filetype_of(&std_file(e)?.metadata()?.file_type()))
}

/// The preview1 filetype of a host file type.
pub(crate) fn filetype_of(t: &std::fs::FileType) -> u8 {
    use std::os::unix::fs::FileTypeExt as _;
    if t.is_dir() {
        filetype::DIRECTORY
    } else if t.is_file() {
        filetype::REGULAR_FILE
    } else if t.is_symlink() {
        filetype::SYMBOLIC_LINK
    } else if t.is_char_device() {
        filetype::CHARACTER_DEVICE
    } else if t.is_block_device() {
        filetype::BLOCK_DEVICE
    } else if t.is_socket() {
        filetype::SOCKET_STREAM
    } else {
        filetype::UNKNOWN
    }
}

fn fd_fdstat_set_flags(ctx: &mut WasiCtx, fd: u32, flags: u16) -> GuestResult<()> {
    // wasmtime-wasi cannot change the sync flags after opening either.
    if flags & (fdflags::DSYNC | fdflags::RSYNC | fdflags::SYNC) != 0 {
        return Err(Errno::Inval);
    }
    let e = ctx.entry(fd)?;
    match e.handle {
        Handle::File(_) => e.fdflags = flags,
        // A socket's only flag that means anything is `NONBLOCK`.
        Handle::Socket(_) => e.fdflags = flags & fdflags::NONBLOCK,
        _ => return Err(Errno::Badf),
    }
    Ok(())
}

/// The fields of a preview1 `filestat`, from either std or cap-std metadata.
pub(crate) struct Stat {
    dev: u64,
    ino: u64,
    ftype: u8,
    nlink: u64,
    size: u64,
    times: [u64; 3],
}

fn ns(s: i64, n: i64) -> u64 {
    (s as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(n as u64)
}

impl Stat {
    pub(crate) fn from_std(m: &std::fs::Metadata) -> Self {
        Self {
            dev: UnixMeta::dev(m),
            ino: UnixMeta::ino(m),
            ftype: filetype_of(&m.file_type()),
            nlink: UnixMeta::nlink(m),
            size: m.len(),
            times: [
                ns(m.atime(), m.atime_nsec()),
                ns(m.mtime(), m.mtime_nsec()),
                ns(m.ctime(), m.ctime_nsec()),
            ],
        }
    }

    pub(crate) fn from_cap(m: &cap_std::fs::Metadata) -> Self {
        use cap_std::fs::MetadataExt as CapMeta;
        let t = m.file_type();
        let ftype = if t.is_dir() {
            filetype::DIRECTORY
        } else if t.is_symlink() {
            filetype::SYMBOLIC_LINK
        } else if t.is_file() {
            filetype::REGULAR_FILE
        } else {
            filetype::UNKNOWN
        };
        Self {
            dev: CapMeta::dev(m),
            ino: CapMeta::ino(m),
            ftype,
            nlink: CapMeta::nlink(m),
            size: m.len(),
            times: [
                ns(CapMeta::atime(m), CapMeta::atime_nsec(m)),
                ns(CapMeta::mtime(m), CapMeta::mtime_nsec(m)),
                ns(CapMeta::ctime(m), CapMeta::ctime_nsec(m)),
            ],
        }
    }

    /// Writes the `filestat` layout at `out`.
    pub(crate) fn write(&self, m: &mut GuestMemory<'_>, out: u32) -> GuestResult<()> {
        let mut b = [0u8; FILESTAT_SIZE];
        b[0..8].copy_from_slice(&self.dev.to_le_bytes());
        b[8..16].copy_from_slice(&self.ino.to_le_bytes());
        b[16] = self.ftype;
        b[24..32].copy_from_slice(&self.nlink.to_le_bytes());
        b[32..40].copy_from_slice(&self.size.to_le_bytes());
        for (i, t) in self.times.iter().enumerate() {
            b[40 + 8 * i..48 + 8 * i].copy_from_slice(&t.to_le_bytes());
        }
        m.write(out, &b)
    }
}

fn fd_filestat_get(
    m: &mut GuestMemory<'_>,
    ctx: &mut WasiCtx,
    fd: u32,
    out: u32,
) -> GuestResult<()> {
    let e = ctx.entry(fd)?;
    let meta = match &e.handle {
        Handle::File(f) => f.metadata()?,
        Handle::Dir(d) => {
            // A directory's metadata through a duplicate of its fd, as a std `File`.
            let dup = d.try_clone()?.into_std_file();
            dup.metadata()?
        }
        Handle::Socket(_) => {
            let mut b = [0u8; FILESTAT_SIZE];
            b[16] = filetype::SOCKET_STREAM;
            return m.write(out, &b);
        }
        _ => {
            // Stdio: all zero but the type, as wasmtime-wasi reports it.
            let mut b = [0u8; FILESTAT_SIZE];
            b[16] = filetype::UNKNOWN;
            return m.write(out, &b);
        }
    };
    Stat::from_std(&meta).write(m, out)
}

fn fd_filestat_set_size(ctx: &mut WasiCtx, fd: u32, size: u64) -> GuestResult<()> {
    let preopen = file(ctx, fd)?.preopen;
    let quota = quota_of(ctx, preopen);
    let e = file(ctx, fd)?;
    if !e.write {
        return Err(Errno::Badf);
    }
    resize(std_file(e)?, quota.as_deref(), size)
}

/// Turns the `(atim, mtim, fstflags)` of a `*_set_times` call into rustix timestamps, refusing contradictions.
pub(crate) fn timestamps(atim: u64, mtim: u64, fl: u16) -> GuestResult<rustix::fs::Timestamps> {
    let one = |t: u64, set: u16, now: u16| -> GuestResult<rustix::fs::Timespec> {
        match (fl & set != 0, fl & now != 0) {
            (true, true) => Err(Errno::Inval),
            (true, false) => Ok(rustix::fs::Timespec {
                tv_sec: (t / 1_000_000_000) as i64,
                tv_nsec: (t % 1_000_000_000) as _,
            }),
            (false, true) => Ok(rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_NOW,
            }),
            (false, false) => Ok(rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_OMIT,
            }),
        }
    };
    Ok(rustix::fs::Timestamps {
        last_access: one(atim, fstflags::ATIM, fstflags::ATIM_NOW)?,
        last_modification: one(mtim, fstflags::MTIM, fstflags::MTIM_NOW)?,
    })
}

fn fd_filestat_set_times(
    ctx: &mut WasiCtx,
    fd: u32,
    atim: u64,
    mtim: u64,
    fl: u16,
) -> GuestResult<()> {
    let ts = timestamps(atim, mtim, fl)?;
    let e = ctx.entry(fd)?;
    let preopen = e.preopen;
    if preopen.is_some_and(|p| ctx.read_only(p)) {
        return Err(Errno::Perm);
    }
    let e = ctx.entry(fd)?;
    match &e.handle {
        Handle::File(f) => rustix::fs::futimens(f, &ts)
            .map_err(|err| crate::wasi::errno::from_raw_os(err.raw_os_error())),
        Handle::Dir(d) => rustix::fs::futimens(d, &ts)
            .map_err(|err| crate::wasi::errno::from_raw_os(err.raw_os_error())),
        _ => Err(Errno::Badf),
    }
}

/// `fd_read` (`at` = `None`, from and advancing the fd's offset) and `fd_pread` (`at` = the offset): the
/// bytes read, or `None` when a wait for stdin was cut short by a suspend request.
fn read_file(
    m: &mut GuestMemory<'_>,
    ctx: &mut WasiCtx,
    fd: u32,
    iovs: u32,
    n: u32,
    at: Option<u64>,
) -> GuestResult<Option<u32>> {
    if let Handle::Socket(_) = ctx.entry(fd)?.handle {
        if at.is_some() {
            return Err(Errno::Spipe);
        }
        return crate::wasi::socket::recv(m, ctx, fd, iovs, n, false, false);
    }
    let iovs = m.read_iovecs(iovs, n)?;
    let mut total: u32 = 0;
    // A suspend request wins over an interrupt: the interrupt stays pending through the pause.
    let wake = waker(ctx.interrupt.clone(), ctx.suspendable());
    let e = ctx.entry(fd)?;
    match &e.handle {
        Handle::Stdin(stdin) if at.is_none() => {
            let stdin_wake = || {
                wake().map(|why| match why {
                    Wake::Suspend => StdinRead::Suspend,
                    Wake::Interrupted => StdinRead::Interrupted,
                })
            };
            let mut stdin = lock(stdin);
            for iov in iovs {
                // Only the first buffer waits: once something was read the call returns, so a suspend
                // request never finds a read half-done (the rewind re-issues it from nothing).
                let block = total == 0;
                match stdin.read(m.slice_mut(iov.ptr, iov.len)?, block, &stdin_wake)? {
                    StdinRead::Data(got) => {
                        total = total.saturating_add(got as u32);
                        if got < iov.len as usize {
                            break;
                        }
                    }
                    StdinRead::WouldBlock => break,
                    StdinRead::Suspend => return Ok(None),
                    StdinRead::Interrupted => return Err(Errno::Intr),
                }
            }
        }
        Handle::Pipe(end) if at.is_none() && !end.is_write() => {
            for iov in iovs {
                let block = total == 0;
                match end.read(m.slice_mut(iov.ptr, iov.len)?, block, &wake) {
                    PipeRead::Data(got) => {
                        total = total.saturating_add(got as u32);
                        if got < iov.len as usize {
                            break;
                        }
                    }
                    PipeRead::WouldBlock => break,
                    PipeRead::Woken(Wake::Suspend) => return Ok(None),
                    PipeRead::Woken(Wake::Interrupted) => return Err(Errno::Intr),
                }
            }
        }
        Handle::Stdin(_)
        | Handle::Stdout(_)
        | Handle::Stderr(_)
        | Handle::Pipe(_)
        | Handle::Socket(_)
            if at.is_some() =>
        {
            return Err(Errno::Spipe);
        }
        Handle::File(f) => {
            if !e.read {
                return Err(Errno::Badf);
            }
            let mut pos = at.unwrap_or(e.offset);
            for iov in iovs {
                let buf = m.slice_mut(iov.ptr, iov.len)?;
                let mut got = 0;
                // Fill each buffer fully unless the file ends, so a short count always means end of file.
                while got < buf.len() {
                    let k = f.read_at(&mut buf[got..], pos)?;
                    if k == 0 {
                        break;
                    }
                    got += k;
                    pos += k as u64;
                }
                total = total.saturating_add(got as u32);
                if got < buf.len() {
                    break;
                }
            }
            if at.is_none() {
                e.offset = pos;
            }
        }
        _ => return Err(Errno::Badf),
    }
    Ok(Some(total))
}

/// `fd_write` (`at` = `None`: at the offset, or the end for `APPEND`) and `fd_pwrite` (`at` = the offset):
/// the bytes written, or `None` when a wait for room in a pipe was cut short by a suspend request.
fn write_file(
    m: &mut GuestMemory<'_>,
    ctx: &mut WasiCtx,
    fd: u32,
    iovs: u32,
    n: u32,
    at: Option<u64>,
) -> GuestResult<Option<u32>> {
    if let Handle::Socket(_) = ctx.entry(fd)?.handle {
        if at.is_some() {
            return Err(Errno::Spipe);
        }
        return crate::wasi::socket::send(m, ctx, fd, iovs, n);
    }
    let iovs = m.read_iovecs(iovs, n)?;
    let preopen = ctx.entry(fd)?.preopen;
    let quota = quota_of(ctx, preopen);
    let (interrupt, suspendable) = (ctx.interrupt.clone(), ctx.suspendable());
    let e = ctx.entry(fd)?;
    let mut total: u32 = 0;
    match &e.handle {
        Handle::Stdout(_) | Handle::Stderr(_) | Handle::Pipe(_) if at.is_some() => {
            return Err(Errno::Spipe);
        }
        Handle::Stdout(out) | Handle::Stderr(out) => {
            let mut out = lock(out);
            for iov in iovs {
                out.write(m.slice(iov.ptr, iov.len)?);
                total = total.saturating_add(iov.len);
            }
        }
        Handle::Pipe(end) if end.is_write() => {
            let wake = waker(interrupt.clone(), suspendable);
            'iovs: for iov in iovs {
                let mut data = m.slice(iov.ptr, iov.len)?;
                while !data.is_empty() {
                    // Only a write that has moved nothing yet waits or unwinds; after that, a short count.
                    let block = total == 0;
                    match end.write(data, block, &wake) {
                        PipeWrite::Written(k) => {
                            total = total.saturating_add(k as u32);
                            data = &data[k..];
                        }
                        PipeWrite::Broken if total == 0 => return Err(Errno::Pipe),
                        PipeWrite::WouldBlock | PipeWrite::Broken => break 'iovs,
                        PipeWrite::Woken(_) if total > 0 => break 'iovs,
                        PipeWrite::Woken(Wake::Suspend) => return Ok(None),
                        PipeWrite::Woken(Wake::Interrupted) => return Err(Errno::Intr),
                    }
                }
            }
        }
        Handle::File(f) => {
            if !e.write {
                return Err(Errno::Badf);
            }
            let mut pos = match at {
                Some(p) => p,
                None if e.fdflags & fdflags::APPEND != 0 => f.metadata()?.len(),
                None => e.offset,
            };
            for iov in iovs {
                let data = m.slice(iov.ptr, iov.len)?;
                match write_at_charged(f, quota.as_deref(), data, pos) {
                    Ok(()) => {}
                    // Report what was written before the failure, as a short write.
                    Err(_) if total > 0 => break,
                    Err(err) => return Err(err),
                }
                pos += data.len() as u64;
                total = total.saturating_add(iov.len);
            }
            if at.is_none() {
                e.offset = pos;
            }
        }
        _ => return Err(Errno::Badf),
    }
    Ok(Some(total))
}

/// Writes all of `data` at `pos`, charging the quota for the bytes the file grows by.
fn write_at_charged(
    f: &std::fs::File,
    quota: Option<&DiskQuota>,
    data: &[u8],
    pos: u64,
) -> GuestResult<()> {
    let end = pos.checked_add(data.len() as u64).ok_or(Errno::Fbig)?;
    let growth = match quota {
        Some(q) => {
            let g = end.saturating_sub(f.metadata()?.len());
            q.reserve_bytes(g)?;
            g
        }
        None => 0,
    };
    if let Err(err) = f.write_all_at(data, pos) {
        if let Some(q) = quota {
            q.release_bytes(growth);
        }
        return Err(err.into());
    }
    Ok(())
}

fn prestat_name(ctx: &mut WasiCtx, fd: u32) -> GuestResult<String> {
    let e = ctx.entry(fd)?;
    match (e.is_preopen, e.preopen) {
        (true, Some(p)) => ctx
            .preopens
            .get(p as usize)
            .map(|p| p.guest.clone())
            .ok_or(Errno::Badf),
        _ => Err(Errno::Badf),
    }
}

/// One directory entry as listed by `fd_readdir`.
struct Listed {
    name: Vec<u8>,
    ino: u64,
    ftype: u8,
}

fn fd_readdir(
    m: &mut GuestMemory<'_>,
    ctx: &mut WasiCtx,
    fd: u32,
    buf: u32,
    len: u32,
    cookie: u64,
) -> GuestResult<u32> {
    // Checked first so a bogus buffer is EFAULT before any work.
    m.slice(buf, len)?;
    let e = ctx.entry(fd)?;
    let Handle::Dir(dir) = &e.handle else {
        return Err(Errno::Badf);
    };
    let self_ino = dir.dir_metadata()?.ino();
    let mut listed = vec![
        Listed {
            name: b".".to_vec(),
            ino: self_ino,
            ftype: filetype::DIRECTORY,
        },
        Listed {
            name: b"..".to_vec(),
            ino: self_ino,
            ftype: filetype::DIRECTORY,
        },
    ];
    let mut rest = Vec::new();
    for entry in dir.entries()? {
        let entry = entry?;
        let meta = entry.metadata()?;
        let ft = entry.file_type()?;
        let ftype = if ft.is_dir() {
            filetype::DIRECTORY
        } else if ft.is_symlink() {
            filetype::SYMBOLIC_LINK
        } else if ft.is_file() {
            filetype::REGULAR_FILE
        } else {
            filetype::UNKNOWN
        };
        let name = entry.file_name().into_encoded_bytes();
        rest.push(Listed {
            name,
            ino: meta.ino(),
            ftype,
        });
    }
    // Name order keeps cookies stable across a save and restore onto a re-extracted tree.
    rest.sort_by(|a, b| a.name.cmp(&b.name));
    listed.extend(rest);

    let skip = usize::try_from(cookie).map_err(|_| Errno::Overflow)?;
    let mut at = buf;
    let mut cap = len as usize;
    let mut next_cookie = cookie;
    for (i, l) in listed.iter().enumerate().skip(skip) {
        let mut head = [0u8; DIRENT_SIZE];
        let d_next = i as u64 + 1;
        head[0..8].copy_from_slice(&d_next.to_le_bytes());
        head[8..16].copy_from_slice(&l.ino.to_le_bytes());
        head[16..20].copy_from_slice(&(l.name.len() as u32).to_le_bytes());
        head[20] = l.ftype;
        // A partly written last entry tells the guest to call again with a larger buffer, as in wasmtime-wasi.
        let h = cap.min(DIRENT_SIZE);
        m.write(at, &head[..h])?;
        at += h as u32;
        cap -= h;
        if cap == 0 {
            break;
        }
        let n = cap.min(l.name.len());
        m.write(at, &l.name[..n])?;
        at += n as u32;
        cap -= n;
        next_cookie = d_next;
        if cap == 0 {
            break;
        }
    }
    ctx.entry(fd)?.readdir_cookie = next_cookie;
    Ok(len - cap as u32)
}

fn fd_renumber(ctx: &mut WasiCtx, from: u32, to: u32) -> GuestResult<()> {
    if !ctx.fds.contains_key(&from) || !ctx.fds.contains_key(&to) {
        return Err(Errno::Badf);
    }
    if from != to {
        let e = ctx.fds.remove(&from).ok_or(Errno::Badf)?;
        ctx.fds.insert(to, e);
    }
    Ok(())
}

fn fd_seek(ctx: &mut WasiCtx, fd: u32, off: i64, wh: i32) -> GuestResult<u64> {
    let e = ctx.entry(fd)?;
    let f = match &e.handle {
        Handle::File(f) => f,
        Handle::Stdin(_)
        | Handle::Stdout(_)
        | Handle::Stderr(_)
        | Handle::Pipe(_)
        | Handle::Socket(_) => {
            return Err(Errno::Spipe);
        }
        Handle::Dir(_) => return Err(Errno::Badf),
    };
    let base = match u8::try_from(wh) {
        Ok(whence::SET) => 0,
        Ok(whence::CUR) => e.offset,
        Ok(whence::END) => f.metadata()?.len(),
        _ => return Err(Errno::Inval),
    };
    let pos = i128::from(base) + i128::from(off);
    let pos = u64::try_from(pos).map_err(|_| Errno::Inval)?;
    e.offset = pos;
    Ok(pos)
}
