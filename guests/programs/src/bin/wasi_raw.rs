//! Calls every preview1 import directly (through the `wasi` crate's raw bindings), on success and error paths,
//! printing one `name: result` line per call so two hosts can be compared. Lines starting with `x-` are where
//! Stasis deliberately differs from wasmtime-wasi. Exits with code 3. Bogus pointers and invalid enum values
//! (which trap in wasmtime-wasi) are `escape_pointers`'s business.

use wasi::wasi_snapshot_preview1 as raw;

/// The guest address of a local the host writes to (a `*mut`, so the compiler does not assume it unchanged).
fn p<T>(v: &mut T) -> i32 {
    v as *mut T as i32
}

fn line(name: &str, v: impl std::fmt::Debug) {
    println!("{name}: {v:?}");
}

/// Opens `path` under the root preopen; returns (errno, fd).
fn open(path: &str, oflags: i32, rights: i64, fdflags: i32) -> (i32, i32) {
    let mut fd = -1i32;
    // SAFETY: pointers are to live locals and the path string.
    let e = unsafe {
        raw::path_open(
            3,
            1,
            path.as_ptr() as i32,
            path.len() as i32,
            oflags,
            rights,
            rights,
            fdflags,
            p(&mut fd),
        )
    };
    (e, fd)
}

fn main() {
    // SAFETY for the whole block: every pointer passed is either to a live local or deliberately out of bounds;
    // the host must answer EFAULT for the latter without touching memory.
    unsafe {
        let mut a = 0u32;
        let mut b = 0u32;
        line(
            "args_sizes_get",
            (raw::args_sizes_get(p(&mut a), p(&mut b)), a, b),
        );
        line(
            "environ_sizes_get",
            (raw::environ_sizes_get(p(&mut a), p(&mut b)), a, b),
        );

        let mut t = 0u64;
        let mut t2 = 0u64;
        line(
            "clock_res_get realtime",
            (raw::clock_res_get(0, p(&mut t)), t > 0),
        );
        line("clock_res_get cputime", raw::clock_res_get(2, p(&mut t)));
        line(
            "clock_time_get monotonic",
            raw::clock_time_get(1, 1, p(&mut t)),
        );
        line(
            "clock_time_get thread cputime",
            raw::clock_time_get(3, 1, p(&mut t)),
        );
        line(
            "realtime after 2020",
            (
                raw::clock_time_get(0, 1, p(&mut t2)),
                t2 > 1_577_836_800_000_000_000,
            ),
        );

        // poll_oneoff: a 20 ms monotonic sleep, measured on the monotonic clock.
        let mut sub = [0u8; 48];
        sub[0..8].copy_from_slice(&7u64.to_le_bytes());
        sub[8] = 0; // clock
        sub[16..20].copy_from_slice(&1u32.to_le_bytes());
        sub[24..32].copy_from_slice(&20_000_000u64.to_le_bytes());
        let mut ev = [0u8; 64];
        let mut n = 0u32;
        raw::clock_time_get(1, 1, p(&mut t));
        let r = raw::poll_oneoff(sub.as_ptr() as i32, ev.as_mut_ptr() as i32, 1, p(&mut n));
        raw::clock_time_get(1, 1, p(&mut t2));
        line(
            "poll_oneoff sleep",
            (r, n, ev[0], ev[10], t2 - t >= 20_000_000),
        );
        line(
            "poll_oneoff none",
            raw::poll_oneoff(sub.as_ptr() as i32, ev.as_mut_ptr() as i32, 0, p(&mut n)),
        );

        line("random_get", raw::random_get(ev.as_mut_ptr() as i32, 16));
        line("sched_yield", raw::sched_yield());
        line("proc_raise", raw::proc_raise(2));

        // stdio
        let msg = b"raw stdout\n";
        let iov = [msg.as_ptr() as u32, msg.len() as u32];
        line(
            "fd_write stdout",
            (raw::fd_write(1, iov.as_ptr() as i32, 1, p(&mut a)), a),
        );
        line(
            "fd_write stdin",
            raw::fd_write(0, iov.as_ptr() as i32, 1, p(&mut a)),
        );
        let mut buf = [0u8; 64];
        let riov = [buf.as_mut_ptr() as u32, 64u32];
        line(
            "fd_read stdin",
            (
                raw::fd_read(0, riov.as_ptr() as i32, 1, p(&mut a)),
                a,
                &buf[..a as usize],
            ),
        );
        line(
            "fd_read stdout",
            raw::fd_read(1, riov.as_ptr() as i32, 1, p(&mut a)),
        );

        // prestat
        let mut pre = [0u32; 2];
        line(
            "fd_prestat_get",
            (raw::fd_prestat_get(3, pre.as_mut_ptr() as i32), pre),
        );
        line(
            "fd_prestat_get stdin",
            raw::fd_prestat_get(0, pre.as_mut_ptr() as i32),
        );
        line(
            "fd_prestat_get closed",
            raw::fd_prestat_get(77, pre.as_mut_ptr() as i32),
        );
        line(
            "fd_prestat_dir_name",
            (
                raw::fd_prestat_dir_name(3, buf.as_mut_ptr() as i32, 1),
                buf[0],
            ),
        );
        line(
            "fd_prestat_dir_name short",
            raw::fd_prestat_dir_name(3, buf.as_mut_ptr() as i32, 0),
        );

        // fdstat
        let mut st = [0u64; 3];
        line(
            "fd_fdstat_get root",
            (
                raw::fd_fdstat_get(3, st.as_mut_ptr() as i32),
                st[0] & 0xff,
                st[1],
                st[2],
            ),
        );
        line(
            "fd_fdstat_get stdout",
            (
                raw::fd_fdstat_get(1, st.as_mut_ptr() as i32),
                st[0] & 0xff,
                st[1],
            ),
        );

        // directories and files
        let mkdir =
            |path: &str| raw::path_create_directory(3, path.as_ptr() as i32, path.len() as i32);
        line("path_create_directory", mkdir("raw"));
        line("path_create_directory again", mkdir("raw"));
        let (e, f) = open("raw/f", 1 | 8, (1 << 1) | (1 << 6) | (1 << 2), 0);
        line("path_open create", e);
        line(
            "fd_fdstat_get file",
            (
                raw::fd_fdstat_get(f, st.as_mut_ptr() as i32),
                st[0] & 0xffff_ffff,
                st[1],
            ),
        );
        let data = b"0123456789";
        let wiov = [data.as_ptr() as u32, data.len() as u32];
        line(
            "fd_write file",
            (raw::fd_write(f, wiov.as_ptr() as i32, 1, p(&mut a)), a),
        );
        line("fd_tell", (raw::fd_tell(f, p(&mut t)), t));
        line("fd_seek set", (raw::fd_seek(f, 2, 0, p(&mut t)), t));
        line("fd_seek negative", raw::fd_seek(f, -5, 0, p(&mut t)));
        line("fd_seek dir", raw::fd_seek(3, 0, 1, p(&mut t)));
        let riov3 = [buf.as_mut_ptr() as u32, 3u32];
        line(
            "fd_read file",
            (
                raw::fd_read(f, riov3.as_ptr() as i32, 1, p(&mut a)),
                a,
                &buf[..3],
            ),
        );
        line(
            "fd_pread",
            (
                raw::fd_pread(f, riov3.as_ptr() as i32, 1, 7, p(&mut a)),
                a,
                &buf[..3],
            ),
        );
        let x = b"XY";
        let xiov = [x.as_ptr() as u32, 2u32];
        line(
            "fd_pwrite",
            (raw::fd_pwrite(f, xiov.as_ptr() as i32, 1, 12, p(&mut a)), a),
        );
        line("fd_tell after pwrite", (raw::fd_tell(f, p(&mut t)), t));
        let mut fst = [0u64; 8];
        line(
            "fd_filestat_get",
            (
                raw::fd_filestat_get(f, fst.as_mut_ptr() as i32),
                fst[2] & 0xff,
                fst[3],
                fst[4],
            ),
        );
        line("fd_filestat_set_size", raw::fd_filestat_set_size(f, 4));
        line(
            "fd_filestat_set_times",
            raw::fd_filestat_set_times(f, 1_000_000_000, 2_000_000_000, 1 | 4),
        );
        line(
            "fd_filestat_set_times both",
            raw::fd_filestat_set_times(f, 0, 0, 1 | 2),
        );
        line(
            "after set",
            (
                raw::fd_filestat_get(f, fst.as_mut_ptr() as i32),
                fst[4],
                fst[5],
                fst[6],
            ),
        );
        line("fd_advise", raw::fd_advise(f, 0, 0, 1));
        line("fd_advise dir", raw::fd_advise(3, 0, 0, 1));
        line("fd_sync", raw::fd_sync(f));
        line("fd_datasync", raw::fd_datasync(f));
        line("fd_fdstat_set_rights", raw::fd_fdstat_set_rights(f, 0, 0));
        line("fd_fdstat_set_flags append", raw::fd_fdstat_set_flags(f, 1));
        line(
            "fd_write append",
            (raw::fd_write(f, xiov.as_ptr() as i32, 1, p(&mut a)), a),
        );
        line(
            "fd_filestat_get after append",
            (raw::fd_filestat_get(f, fst.as_mut_ptr() as i32), fst[4]),
        );
        // Within the current size, so the file stays comparable; growth is tested with the quota.
        line("x-fd_allocate", raw::fd_allocate(f, 0, 4));

        // poll_oneoff with a 10 s timeout and a file read subscription: the file is ready at once.
        let mut subs = [0u8; 96];
        subs[0..8].copy_from_slice(&1u64.to_le_bytes());
        subs[16..20].copy_from_slice(&1u32.to_le_bytes());
        subs[24..32].copy_from_slice(&10_000_000_000u64.to_le_bytes());
        subs[48..56].copy_from_slice(&2u64.to_le_bytes());
        subs[56] = 1; // fd_read
        subs[64..68].copy_from_slice(&(f as u32).to_le_bytes());
        let r = raw::poll_oneoff(subs.as_ptr() as i32, ev.as_mut_ptr() as i32, 2, p(&mut n));
        line("poll_oneoff fd ready", (r, n, ev[0], ev[8], ev[10]));
        subs[64..68].copy_from_slice(&77u32.to_le_bytes());
        let r = raw::poll_oneoff(subs.as_ptr() as i32, ev.as_mut_ptr() as i32, 2, p(&mut n));
        line("poll_oneoff closed fd", (r, n, ev[0], ev[8], ev[10]));

        // fd_renumber
        let (_, g) = open("raw/f", 0, 1 << 1, 0);
        line("fd_renumber to closed", raw::fd_renumber(g, 40));
        line("fd_renumber", raw::fd_renumber(f, g));
        line(
            "fd_read renumbered",
            (
                raw::fd_pread(g, riov3.as_ptr() as i32, 1, 0, p(&mut a)),
                a,
                &buf[..3],
            ),
        );
        line(
            "fd_read old fd",
            raw::fd_read(f, riov3.as_ptr() as i32, 1, p(&mut a)),
        );
        line("fd_close", raw::fd_close(g));
        line("fd_close again", raw::fd_close(g));

        // path_*
        let path_fs = |flags: i32, path: &str, out: &mut [u64; 8]| {
            raw::path_filestat_get(
                3,
                flags,
                path.as_ptr() as i32,
                path.len() as i32,
                out.as_mut_ptr() as i32,
            )
        };
        line(
            "path_filestat_get",
            (path_fs(0, "raw/f", &mut fst), fst[2] & 0xff, fst[4]),
        );
        line(
            "path_filestat_get missing",
            path_fs(0, "raw/none", &mut fst),
        );
        let s = "raw/f";
        line(
            "path_filestat_set_times",
            raw::path_filestat_set_times(3, 0, s.as_ptr() as i32, 5, 0, 5_000_000_000, 4),
        );
        line("mtime", (path_fs(0, "raw/f", &mut fst), fst[6]));
        let link = |from: &str, to: &str| {
            raw::path_link(
                3,
                0,
                from.as_ptr() as i32,
                from.len() as i32,
                3,
                to.as_ptr() as i32,
                to.len() as i32,
            )
        };
        line("path_link", link("raw/f", "raw/f2"));
        line("path_link exists", link("raw/f", "raw/f2"));
        line("nlink", (path_fs(0, "raw/f", &mut fst), fst[3]));
        let sym = |target: &str, at: &str| {
            raw::path_symlink(
                target.as_ptr() as i32,
                target.len() as i32,
                3,
                at.as_ptr() as i32,
                at.len() as i32,
            )
        };
        line("path_symlink", sym("f", "raw/s"));
        line("path_symlink exists", sym("f", "raw/s"));
        let rl = |path: &str, len: i32, out: &mut [u8; 64], n: &mut u32| {
            raw::path_readlink(
                3,
                path.as_ptr() as i32,
                path.len() as i32,
                out.as_mut_ptr() as i32,
                len,
                p(n),
            )
        };
        let mut out = [0u8; 64];
        line(
            "path_readlink",
            (rl("raw/s", 64, &mut out, &mut a), a, out[0]),
        );
        line("path_readlink not link", rl("raw/f", 64, &mut out, &mut a));
        line(
            "path_filestat_get nofollow",
            (path_fs(0, "raw/s", &mut fst), fst[2] & 0xff),
        );
        line(
            "path_filestat_get follow",
            (path_fs(1, "raw/s", &mut fst), fst[2] & 0xff),
        );
        let ren = |from: &str, to: &str| {
            raw::path_rename(
                3,
                from.as_ptr() as i32,
                from.len() as i32,
                3,
                to.as_ptr() as i32,
                to.len() as i32,
            )
        };
        line("path_rename", ren("raw/f2", "raw/f3"));
        line("path_rename missing", ren("raw/f2", "raw/f4"));
        line("path_create_directory sub", mkdir("raw/d"));
        line("path_rename dir over file", ren("raw/d", "raw/f3"));
        let rmdir =
            |path: &str| raw::path_remove_directory(3, path.as_ptr() as i32, path.len() as i32);
        let unlink = |path: &str| raw::path_unlink_file(3, path.as_ptr() as i32, path.len() as i32);
        line("path_remove_directory file", rmdir("raw/f3"));
        line("path_remove_directory non-empty", rmdir("raw"));
        line("path_unlink_file dir", unlink("raw/d"));
        line("path_unlink_file", unlink("raw/f3"));
        line("path_unlink_file missing", unlink("raw/f3"));
        line("path_unlink_file symlink", unlink("raw/s"));
        line("path_remove_directory", rmdir("raw/d"));
        line("path_open not dir", open("raw/f", 2, 0, 0).0);
        line("path_open missing", open("raw/none", 0, 0, 0).0);
        line("path_open creat dir", open("raw/x", 1 | 2, 0, 0).0);
        line("path_open excl", open("raw/f", 1 | 4, 1 << 6, 0).0);
        let (e, d) = open("raw", 2, 1 << 14, 0);
        line("path_open dir", e);
        line(
            "path_open via file",
            raw::path_open(d, 0, "x".as_ptr() as i32, 1, 0, 0, 0, 0, p(&mut a)),
        );
        line(
            "fd_read dir",
            raw::fd_read(d, riov3.as_ptr() as i32, 1, p(&mut a)),
        );
        let (_, ff) = open("raw/f", 0, 1 << 1, 0);
        line(
            "path_open through file",
            raw::path_open(ff, 0, "x".as_ptr() as i32, 1, 0, 0, 0, 0, p(&mut a)),
        );
        line(
            "fd_fdstat_get dir",
            (
                raw::fd_fdstat_get(d, st.as_mut_ptr() as i32),
                st[0] & 0xff,
                st[1],
            ),
        );

        // fd_readdir of raw/: ".", "..", "f"
        let mut dbuf = [0u8; 256];
        let r = raw::fd_readdir(d, dbuf.as_mut_ptr() as i32, 256, 0, p(&mut a));
        let mut names = Vec::new();
        let mut off = 0usize;
        while off + 24 <= a as usize {
            let next = u64::from_le_bytes(dbuf[off..off + 8].try_into().unwrap_or_default());
            let len = u32::from_le_bytes(dbuf[off + 16..off + 20].try_into().unwrap_or_default())
                as usize;
            let ty = dbuf[off + 20];
            let name = String::from_utf8_lossy(&dbuf[off + 24..(off + 24 + len).min(a as usize)])
                .into_owned();
            names.push((next, name, ty));
            off += 24 + len;
        }
        line("fd_readdir", (r, a, names));
        line(
            "fd_readdir cookie 2",
            (
                raw::fd_readdir(d, dbuf.as_mut_ptr() as i32, 256, 2, p(&mut a)),
                a,
            ),
        );
        line(
            "fd_readdir small",
            (
                raw::fd_readdir(d, dbuf.as_mut_ptr() as i32, 30, 0, p(&mut a)),
                a,
            ),
        );
        line(
            "fd_readdir file",
            raw::fd_readdir(ff, dbuf.as_mut_ptr() as i32, 256, 0, p(&mut a)),
        );

        // sockets
        line("sock_accept", raw::sock_accept(3, 0, p(&mut a)));
        line(
            "sock_recv",
            raw::sock_recv(0, riov.as_ptr() as i32, 1, 0, p(&mut a), p(&mut b)),
        );
        line(
            "sock_send",
            raw::sock_send(1, iov.as_ptr() as i32, 1, 0, p(&mut a)),
        );
        line("sock_shutdown", raw::sock_shutdown(3, 2));
        line("x-sock_shutdown closed", raw::sock_shutdown(99, 2));

        raw::proc_exit(3);
    }
}
