//! Calls the raw `wasi_snapshot_preview1` imports with pointers and lengths outside linear memory (past its
//! end, wrapping around 4 GiB, absurd counts) or invalid enum values, and prints `name: errno` per call.
//! wasmtime-wasi traps on these; Stasis must answer each
//! with an errno — EFAULT, EINVAL or ENAMETOOLONG — and never trap or touch memory outside the guest's;
//! the last line proves the guest is still running with its own memory intact.

use wasi::wasi_snapshot_preview1 as raw;

/// An address far past the end of any guest memory.
const BAD: i32 = 0xFFFF_FFF0_u32 as i32;
/// The highest address: any length past one byte wraps around.
const TOP: i32 = -1;
/// A length that no memory of this guest can hold.
const HUGE: i32 = 0x7FFF_FFFF;

/// The guest address of a local the host may write to.
fn p<T>(v: &mut T) -> i32 {
    v as *mut T as i32
}

fn line(name: &str, errno: i32) {
    println!("{name}: {errno}");
}

fn main() {
    let canary = [0x5Au8; 64];
    let mut out = 0u32;
    let mut out64 = 0u64;
    let mut buf = [0u8; 256];
    let path = "inside.txt";
    let (pp, pl) = (path.as_ptr() as i32, path.len() as i32);
    let link = "link";
    let mut file = 0i32;
    // SAFETY: valid pointers; opens `inside.txt` for reading and seeking (rights fd_read | fd_seek | fd_tell
    // | fd_filestat_get).
    let opened = unsafe {
        raw::path_open(
            3,
            0,
            pp,
            pl,
            0,
            (1 << 1) | (1 << 2) | (1 << 5) | (1 << 21),
            0,
            0,
            p(&mut file),
        )
    };
    assert_eq!(opened, 0, "the host test prepares inside.txt");
    // An iovec whose buffer is out of bounds, and one whose length runs past the end of memory.
    let bad_iov: [u32; 2] = [BAD as u32, 16];
    let long_iov: [u32; 2] = [buf.as_ptr() as u32, u32::MAX];
    // SAFETY for the whole block: every pointer is either to a live local or deliberately out of bounds;
    // the host must refuse the latter without touching memory.
    unsafe {
        line("args_get", raw::args_get(BAD, BAD));
        line("args_sizes_get", raw::args_sizes_get(BAD, p(&mut out)));
        // The host test sets a variable, so there is something to write.
        line("environ_get", raw::environ_get(TOP, TOP));
        line(
            "environ_sizes_get",
            raw::environ_sizes_get(p(&mut out), BAD),
        );
        line("clock_res_get", raw::clock_res_get(0, BAD));
        line("clock_time_get", raw::clock_time_get(1, 1, TOP));
        line(
            "clock_time_get unknown clock",
            raw::clock_time_get(9, 1, p(&mut out64)),
        );
        line("random_get bad", raw::random_get(BAD, 16));
        line(
            "random_get huge",
            raw::random_get(buf.as_mut_ptr() as i32, HUGE),
        );
        line("fd_write bad iovs", raw::fd_write(1, BAD, 1, p(&mut out)));
        line(
            "fd_write bad buffer",
            raw::fd_write(1, bad_iov.as_ptr() as i32, 1, p(&mut out)),
        );
        line(
            "fd_write long buffer",
            raw::fd_write(1, long_iov.as_ptr() as i32, 1, p(&mut out)),
        );
        line(
            "fd_write iovs count",
            raw::fd_write(1, bad_iov.as_ptr() as i32, HUGE, p(&mut out)),
        );
        line(
            "fd_write bad nwritten",
            raw::fd_write(1, bad_iov.as_ptr() as i32, 0, BAD),
        );
        line(
            "fd_read bad buffer",
            raw::fd_read(0, bad_iov.as_ptr() as i32, 1, p(&mut out)),
        );
        line("fd_read bad iovs", raw::fd_read(0, TOP, 1, p(&mut out)));
        line(
            "fd_pwrite bad buffer",
            raw::fd_pwrite(1, bad_iov.as_ptr() as i32, 1, 0, p(&mut out)),
        );
        line(
            "fd_pread long buffer",
            raw::fd_pread(file, long_iov.as_ptr() as i32, 1, 0, p(&mut out)),
        );
        line("fd_prestat_get", raw::fd_prestat_get(3, BAD));
        line("fd_prestat_dir_name", raw::fd_prestat_dir_name(3, BAD, 1));
        line("fd_fdstat_get", raw::fd_fdstat_get(1, BAD));
        line("fd_filestat_get", raw::fd_filestat_get(file, TOP));
        line("fd_seek", raw::fd_seek(file, 0, 1, BAD));
        line(
            "fd_seek unknown whence",
            raw::fd_seek(file, 0, 9, p(&mut out64)),
        );
        line("fd_tell", raw::fd_tell(file, BAD));
        line("fd_readdir", raw::fd_readdir(3, BAD, 100, 0, p(&mut out)));
        line(
            "path_open bad path",
            raw::path_open(3, 0, BAD, 5, 0, 0, 0, 0, p(&mut out)),
        );
        line(
            "path_open bad out",
            raw::path_open(3, 0, pp, pl, 1, 0, 0, 0, BAD),
        );
        line(
            "path_open huge path",
            raw::path_open(3, 0, pp, HUGE, 0, 0, 0, 0, p(&mut out)),
        );
        line(
            "path_filestat_get bad path",
            raw::path_filestat_get(3, 0, TOP, 2, buf.as_mut_ptr() as i32),
        );
        line(
            "path_filestat_get bad out",
            raw::path_filestat_get(3, 0, pp, pl, BAD),
        );
        line(
            "path_create_directory",
            raw::path_create_directory(3, BAD, 4),
        );
        line("path_unlink_file", raw::path_unlink_file(3, BAD, 4));
        line(
            "path_remove_directory",
            raw::path_remove_directory(3, TOP, 4),
        );
        line("path_symlink", raw::path_symlink(BAD, 4, 3, pp, pl));
        line("path_link", raw::path_link(3, 0, pp, pl, 3, BAD, 4));
        line("path_rename", raw::path_rename(3, BAD, 4, 3, pp, pl));
        line(
            "path_readlink bad out",
            raw::path_readlink(3, link.as_ptr() as i32, 4, BAD, 64, p(&mut out)),
        );
        line(
            "path_readlink bad count",
            raw::path_readlink(3, link.as_ptr() as i32, 4, buf.as_mut_ptr() as i32, 64, TOP),
        );
        line(
            "path_filestat_set_times",
            raw::path_filestat_set_times(3, 0, BAD, 4, 0, 0, 0),
        );
        line(
            "poll_oneoff bad subscriptions",
            raw::poll_oneoff(BAD, buf.as_mut_ptr() as i32, 1, p(&mut out)),
        );
        line(
            "poll_oneoff count",
            raw::poll_oneoff(
                buf.as_ptr() as i32,
                buf.as_mut_ptr() as i32,
                HUGE,
                p(&mut out),
            ),
        );
        // A valid call afterwards: the host state is not damaged by all of the above.
        line(
            "clock_time_get valid",
            raw::clock_time_get(1, 1, p(&mut out64)),
        );
    }
    let intact = canary.iter().all(|&b| b == 0x5A);
    println!("alive, memory intact: {intact}");
}
