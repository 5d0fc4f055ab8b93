//! The `path_*` imports: every path is resolved by cap-std relative to a directory fd, so no guest path can
//! leave its preopen; writes under a read-only mount are `EPERM`; creations under the root are charged to the
//! disk quota and removals refunded.

use cap_fs_ext::{
    DirExt as _, FollowSymlinks, MetadataExt as _, OpenOptionsFollowExt as _,
    OpenOptionsMaybeDirExt as _,
};
use cap_std::fs::Dir;
use wasmtime::{Caller, Linker};

use super::fd::{Stat, timestamps};
use super::{Getter, run, u};
use crate::wasi::MODULE;
use crate::wasi::ctx::{FdEntry, Handle, WasiCtx, join_rel};
use crate::wasi::errno::{Errno, GuestResult};
use crate::wasi::types::{LOOKUP_SYMLINK_FOLLOW, fdflags, oflags, rights};

pub(super) fn add<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: Getter<T>,
) -> wasmtime::Result<()> {
    linker.func_wrap(
        MODULE,
        "path_create_directory",
        move |mut c: Caller<'_, T>, fd: i32, p: i32, l: i32| {
            run(&mut c, get, |m, ctx| {
                let path = m.read_path(u(p), u(l), ctx.max_path_len())?;
                create(ctx, u(fd), |d| d.create_dir(&path))
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_filestat_get",
        move |mut c: Caller<'_, T>, fd: i32, fl: i32, p: i32, l: i32, out: i32| {
            run(&mut c, get, |m, ctx| {
                let path = m.read_path(u(p), u(l), ctx.max_path_len())?;
                let (d, _, _) = ctx.dir(u(fd))?;
                let meta = if u(fl) & LOOKUP_SYMLINK_FOLLOW != 0 {
                    d.metadata(&path)?
                } else {
                    d.symlink_metadata(&path)?
                };
                Stat::from_cap(&meta).write(m, u(out))
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_filestat_set_times",
        move |mut c: Caller<'_, T>,
              fd: i32,
              fl: i32,
              p: i32,
              l: i32,
              atim: i64,
              mtim: i64,
              fst: i32| {
            run(&mut c, get, |m, ctx| {
                let path = m.read_path(u(p), u(l), ctx.max_path_len())?;
                let ts = timestamps(atim as u64, mtim as u64, fst as u16)?;
                let (d, _, _) = ctx.dir_mut(u(fd))?;
                let a = to_spec(&ts.last_access);
                let mt = to_spec(&ts.last_modification);
                if u(fl) & LOOKUP_SYMLINK_FOLLOW != 0 {
                    d.set_times(&path, a, mt)?;
                } else {
                    d.set_symlink_times(&path, a, mt)?;
                }
                Ok(())
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_link",
        move |mut c: Caller<'_, T>,
              ofd: i32,
              ofl: i32,
              op: i32,
              ol: i32,
              nfd: i32,
              np: i32,
              nl: i32| {
            run(&mut c, get, |m, ctx| {
                let old = m.read_path(u(op), u(ol), ctx.max_path_len())?;
                let new = m.read_path(u(np), u(nl), ctx.max_path_len())?;
                // Links are made to the entry itself; following a symlink first is refused, as wasmtime-wasi
                // does (linkat's AT_SYMLINK_FOLLOW is not portable).
                if u(ofl) & LOOKUP_SYMLINK_FOLLOW != 0 {
                    return Err(Errno::Inval);
                }
                let (od, _, _) = ctx.dir(u(ofd))?;
                let od = od.try_clone()?;
                create(ctx, u(nfd), |nd| od.hard_link(&old, nd, &new))
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_open",
        move |mut c: Caller<'_, T>,
              fd: i32,
              dfl: i32,
              p: i32,
              l: i32,
              of: i32,
              rb: i64,
              ri: i64,
              ff: i32,
              out: i32| {
            run(&mut c, get, |m, ctx| {
                let path = m.read_path(u(p), u(l), ctx.max_path_len())?;
                let req = OpenRequest {
                    dirflags: u(dfl),
                    oflags: of as u16,
                    rights: rb as u64,
                    inheriting: ri as u64,
                    fdflags: ff as u16,
                };
                let new_fd = path_open(ctx, u(fd), &path, &req)?;
                m.write_u32(u(out), new_fd)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_readlink",
        move |mut c: Caller<'_, T>, fd: i32, p: i32, l: i32, buf: i32, len: i32, out: i32| {
            run(&mut c, get, |m, ctx| {
                let path = m.read_path(u(p), u(l), ctx.max_path_len())?;
                let (d, _, _) = ctx.dir(u(fd))?;
                let target = d.read_link(&path)?.into_os_string().into_encoded_bytes();
                // Truncated to the buffer, as readlink(2) and wasmtime-wasi do.
                let n = target.len().min(u(len) as usize);
                m.write(u(buf), &target[..n])?;
                m.write_u32(u(out), n as u32)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_remove_directory",
        move |mut c: Caller<'_, T>, fd: i32, p: i32, l: i32| {
            run(&mut c, get, |m, ctx| {
                let path = m.read_path(u(p), u(l), ctx.max_path_len())?;
                // rmdir("dir/") removes "dir" (POSIX); cap-std would resolve it to "dir/." and answer EINVAL.
                // A file named with trailing slashes still fails, with ENOTDIR.
                let path = strip_trailing_slashes(&path);
                remove(ctx, u(fd), path, |d| d.remove_dir(path))
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_unlink_file",
        move |mut c: Caller<'_, T>, fd: i32, p: i32, l: i32| {
            run(&mut c, get, |m, ctx| {
                let path = m.read_path(u(p), u(l), ctx.max_path_len())?;
                remove(ctx, u(fd), &path, |d| d.remove_file_or_symlink(&path))
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_rename",
        move |mut c: Caller<'_, T>, ofd: i32, op: i32, ol: i32, nfd: i32, np: i32, nl: i32| {
            run(&mut c, get, |m, ctx| {
                let old = m.read_path(u(op), u(ol), ctx.max_path_len())?;
                let new = m.read_path(u(np), u(nl), ctx.max_path_len())?;
                path_rename(ctx, u(ofd), &old, u(nfd), &new)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_symlink",
        move |mut c: Caller<'_, T>, op: i32, ol: i32, fd: i32, np: i32, nl: i32| {
            run(&mut c, get, |m, ctx| {
                let target = m.read_path(u(op), u(ol), ctx.max_path_len())?;
                let link = m.read_path(u(np), u(nl), ctx.max_path_len())?;
                // cap-std refuses absolute targets: they would name host paths.
                create(ctx, u(fd), |d| d.symlink(&target, &link))
            })
        },
    )?;
    Ok(())
}

fn to_spec(t: &rustix::fs::Timespec) -> Option<cap_fs_ext::SystemTimeSpec> {
    if t.tv_nsec == rustix::fs::UTIME_OMIT {
        None
    } else if t.tv_nsec == rustix::fs::UTIME_NOW {
        Some(cap_fs_ext::SystemTimeSpec::SymbolicNow)
    } else {
        let d = std::time::Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec as u32);
        Some(cap_fs_ext::SystemTimeSpec::Absolute(
            cap_std::time::SystemTime::from_std(std::time::UNIX_EPOCH + d),
        ))
    }
}

/// `path` without its trailing slashes, unless nothing (or only "/") would be left.
fn strip_trailing_slashes(path: &str) -> &str {
    match path.trim_end_matches('/') {
        "" => path,
        trimmed => trimmed,
    }
}

/// Creates one new directory entry in the writable directory `fd`, charging one file to the quota first.
fn create(
    ctx: &mut WasiCtx,
    fd: u32,
    op: impl FnOnce(&Dir) -> std::io::Result<()>,
) -> GuestResult<()> {
    let (d, p, _) = ctx.dir_mut(fd)?;
    let quota = ctx.quota(p);
    if let Some(q) = &quota {
        q.reserve_file()?;
    }
    op(d).map_err(|e| {
        if let Some(q) = &quota {
            q.release_file();
        }
        Errno::from(e)
    })
}

/// Removes `path` from the writable directory `fd`, refunding its file (and its bytes when it was the last link
/// of a regular file).
fn remove(
    ctx: &mut WasiCtx,
    fd: u32,
    path: &str,
    op: impl FnOnce(&Dir) -> std::io::Result<()>,
) -> GuestResult<()> {
    let (d, p, _) = ctx.dir_mut(fd)?;
    let before = d.symlink_metadata(path).ok();
    op(d)?;
    if let (Some(q), Some(meta)) = (ctx.quota(p), before) {
        refund(&q, &meta);
    }
    Ok(())
}

fn refund(q: &crate::wasi::DiskQuota, meta: &cap_std::fs::Metadata) {
    q.release_file();
    if meta.is_file() && meta.nlink() <= 1 {
        q.release_bytes(meta.len());
    }
}

fn path_rename(ctx: &mut WasiCtx, ofd: u32, old: &str, nfd: u32, new: &str) -> GuestResult<()> {
    let (od, op, _) = ctx.dir_mut(ofd)?;
    let (nd, np, _) = ctx.dir_mut(nfd)?;
    let replaced = nd.symlink_metadata(new).ok();
    let moved = od.symlink_metadata(old).ok();
    od.rename(old, nd, new)?;
    // A replaced target disappears from the root; an entry moved between the root and a mount changes side.
    if let (Some(q), Some(meta)) = (ctx.quota(np), &replaced) {
        refund(&q, meta);
    }
    if op != np
        && let Some(meta) = &moved
    {
        let bytes = if meta.is_file() { meta.len() } else { 0 };
        if let Some(q) = ctx.quota(op) {
            q.release_file();
            q.release_bytes(bytes);
        }
        if let Some(q) = ctx.quota(np) {
            // Already moved: charged even when it exceeds the limit, so usage stays truthful.
            let _ = q.reserve_file();
            let _ = q.reserve_bytes(bytes);
        }
    }
    Ok(())
}

/// The arguments of `path_open` besides the directory and the path.
struct OpenRequest {
    dirflags: u32,
    oflags: u16,
    rights: u64,
    inheriting: u64,
    fdflags: u16,
}

fn path_open(ctx: &mut WasiCtx, fd: u32, path: &str, req: &OpenRequest) -> GuestResult<u32> {
    let (d, p, base) = ctx.dir(fd)?;
    let create = req.oflags & oflags::CREAT != 0;
    let trunc = req.oflags & oflags::TRUNC != 0;
    let excl = req.oflags & oflags::EXCL != 0;
    if req.oflags & oflags::DIRECTORY != 0 && (create || trunc || excl) {
        return Err(Errno::Inval);
    }
    // Sync modes cannot be honoured through cap-std; wasmtime-wasi answers ENOTSUP as well.
    if req.fdflags & (fdflags::DSYNC | fdflags::RSYNC | fdflags::SYNC) != 0 {
        return Err(Errno::Notsup);
    }
    let write = req.rights & rights::FD_WRITE != 0 || create || trunc;
    let read = req.rights & rights::FD_READ != 0 || !write;
    if write && ctx.read_only(p) {
        return Err(Errno::Perm);
    }
    let follow = req.dirflags & LOOKUP_SYMLINK_FOLLOW != 0;
    let mut opts = cap_std::fs::OpenOptions::new();
    opts.read(read).write(write).truncate(trunc).maybe_dir(true);
    opts.follow(if follow {
        FollowSymlinks::Yes
    } else {
        FollowSymlinks::No
    });
    if excl {
        opts.create_new(create);
    } else {
        opts.create(create);
    }
    let quota = ctx.quota(p);
    let existing = if follow {
        d.metadata(path)
    } else {
        d.symlink_metadata(path)
    };
    let will_create = create && existing.is_err();
    if will_create && let Some(q) = &quota {
        q.reserve_file()?;
    }
    let opened = d.open_with(path, &opts);
    let file = match opened {
        Ok(f) => f,
        Err(e) => {
            if will_create && let Some(q) = &quota {
                q.release_file();
            }
            return Err(e.into());
        }
    };
    if trunc && let (Some(q), Ok(meta)) = (&quota, &existing) {
        q.release_bytes(meta.len());
    }
    let file = file.into_std();
    let is_dir = file.metadata()?.is_dir();
    let handle = if is_dir {
        Handle::Dir(Dir::from_std_file(file))
    } else if req.oflags & oflags::DIRECTORY != 0 {
        return Err(Errno::Notdir);
    } else {
        Handle::File(file)
    };
    let entry = FdEntry {
        handle,
        preopen: Some(p),
        is_preopen: false,
        rel_path: join_rel(&base.rel_path, path),
        lookupflags: req.dirflags,
        oflags: req.oflags,
        fdflags: if is_dir {
            0
        } else {
            req.fdflags & (fdflags::APPEND | fdflags::NONBLOCK)
        },
        rights_base: req.rights,
        rights_inheriting: req.inheriting,
        read,
        write,
        offset: 0,
        readdir_cookie: 0,
    };
    ctx.insert(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_slashes_are_stripped_but_never_to_nothing() {
        assert_eq!(strip_trailing_slashes("dir/"), "dir");
        assert_eq!(strip_trailing_slashes("a/b//"), "a/b");
        assert_eq!(strip_trailing_slashes("dir"), "dir");
        assert_eq!(strip_trailing_slashes("/"), "/");
        assert_eq!(strip_trailing_slashes(""), "");
    }

    #[test]
    fn omitted_and_now_times_map_to_cap_specs() {
        let omit = rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        };
        assert!(to_spec(&omit).is_none());
        let now = rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        };
        assert!(matches!(
            to_spec(&now),
            Some(cap_fs_ext::SystemTimeSpec::SymbolicNow)
        ));
    }
}
