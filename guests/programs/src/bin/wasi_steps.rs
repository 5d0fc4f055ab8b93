//! A step-driven guest for save/restore tests: `main` does nothing; the host calls the exported `step1`, may
//! save the WASI state and copy linear memory into a fresh instance, then calls `step2`. All state between
//! steps (fd numbers, the readdir cookie, the clock) lives in statics, i.e. in linear memory, and every call is
//! a raw preview1 call on explicit fds so nothing depends on libc's hidden state.
//!
//! Files prepared by the host under the root: `s/file.txt` (16 bytes), `s/dir/{a,b,c,d}`, `s/log.txt`,
//! `s/x.txt`, `s/y.txt`; a mount at fd 4.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

static FILE: AtomicU32 = AtomicU32::new(0);
static DIR: AtomicU32 = AtomicU32::new(0);
static COOKIE: AtomicU64 = AtomicU64::new(0);
static LOG: AtomicU32 = AtomicU32::new(0);
static RENUMBERED: AtomicU32 = AtomicU32::new(0);
static CLOCK: AtomicU64 = AtomicU64::new(0);

fn out(s: &str) {
    let line = format!("{s}\n");
    let iov = [wasi::Ciovec {
        buf: line.as_ptr(),
        buf_len: line.len(),
    }];
    // SAFETY: the iovec points at a live string.
    let _ = unsafe { wasi::fd_write(1, &iov) };
}

fn open(path: &str, oflags: wasi::Oflags, rights: wasi::Rights, fdflags: wasi::Fdflags) -> u32 {
    // SAFETY: a plain preview1 call with a valid string.
    unsafe {
        wasi::path_open(
            3,
            wasi::LOOKUPFLAGS_SYMLINK_FOLLOW,
            path,
            oflags,
            rights,
            rights,
            fdflags,
        )
    }
    .unwrap_or_else(|e| panic!("open {path}: {e}"))
}

fn read(fd: u32, n: usize) -> String {
    let mut buf = vec![0u8; n];
    let iov = [wasi::Iovec {
        buf: buf.as_mut_ptr(),
        buf_len: n,
    }];
    // SAFETY: the iovec points at a live buffer.
    let got = unsafe { wasi::fd_read(fd, &iov) }.unwrap_or(0);
    String::from_utf8_lossy(&buf[..got]).into_owned()
}

/// Reads directory entries from `cookie` into a small buffer; returns their names and the cookie after them.
fn readdir(fd: u32, cookie: u64, buf_len: usize) -> (Vec<String>, u64) {
    let mut buf = vec![0u8; buf_len];
    // SAFETY: the buffer is live and `buf_len` long.
    let used = unsafe { wasi::fd_readdir(fd, buf.as_mut_ptr(), buf_len, cookie) }.unwrap_or(0);
    let (mut names, mut next, mut off) = (Vec::new(), cookie, 0);
    while off + 24 <= used {
        let d_next = u64::from_le_bytes(buf[off..off + 8].try_into().unwrap_or_default());
        let len =
            u32::from_le_bytes(buf[off + 16..off + 20].try_into().unwrap_or_default()) as usize;
        if off + 24 + len > used {
            break; // truncated entry: read again from `next`
        }
        names.push(String::from_utf8_lossy(&buf[off + 24..off + 24 + len]).into_owned());
        next = d_next;
        off += 24 + len;
    }
    (names, next)
}

fn monotonic() -> u64 {
    // SAFETY: a plain preview1 call.
    unsafe { wasi::clock_time_get(wasi::CLOCKID_MONOTONIC, 1) }.unwrap_or(0)
}

/// Opens everything and consumes part of each fd.
#[unsafe(no_mangle)]
pub extern "C" fn step1() {
    let f = open(
        "s/file.txt",
        0,
        wasi::RIGHTS_FD_READ | wasi::RIGHTS_FD_SEEK,
        0,
    );
    FILE.store(f, Relaxed);
    out(&format!("file fd {f} read {:?}", read(f, 5)));

    let d = open("s/dir", wasi::OFLAGS_DIRECTORY, wasi::RIGHTS_FD_READDIR, 0);
    DIR.store(d, Relaxed);
    // 80 bytes hold ".", ".." and "a" (25 + 26 + 25) but not "b".
    let (names, cookie) = readdir(d, 0, 80);
    COOKIE.store(cookie, Relaxed);
    out(&format!("dir fd {d} first {names:?} cookie {cookie}"));

    let l = open(
        "s/log.txt",
        0,
        wasi::RIGHTS_FD_WRITE | wasi::RIGHTS_FD_SEEK,
        wasi::FDFLAGS_APPEND,
    );
    LOG.store(l, Relaxed);
    let one = b"one\n";
    // SAFETY: live buffers.
    unsafe {
        let _ = wasi::fd_write(
            l,
            &[wasi::Ciovec {
                buf: one.as_ptr(),
                buf_len: one.len(),
            }],
        );
        let _ = wasi::fd_seek(l, 0, wasi::WHENCE_SET);
    }

    let x = open("s/x.txt", 0, wasi::RIGHTS_FD_READ, 0);
    let y = open("s/y.txt", 0, wasi::RIGHTS_FD_READ, 0);
    let gap = open("s/x.txt", 0, wasi::RIGHTS_FD_READ, 0);
    // SAFETY: fds this program opened.
    unsafe {
        let _ = wasi::fd_renumber(x, y);
        let _ = wasi::fd_close(gap);
        // The mount preopen is closed for good.
        let _ = wasi::fd_close(4);
    }
    RENUMBERED.store(y, Relaxed);
    out(&format!(
        "renumbered {x} -> {y} read {:?}, closed {gap} and 4",
        read(y, 2)
    ));
    CLOCK.store(monotonic(), Relaxed);
}

/// Continues from where `step1` left every fd.
#[unsafe(no_mangle)]
pub extern "C" fn step2() {
    out(&format!("file continues {:?}", read(FILE.load(Relaxed), 5)));
    let (names, cookie) = readdir(DIR.load(Relaxed), COOKIE.load(Relaxed), 4096);
    out(&format!("dir continues {names:?} cookie {cookie}"));
    let two = b"two\n";
    // SAFETY: live buffer, fd opened by step1.
    let _ = unsafe {
        wasi::fd_write(
            LOG.load(Relaxed),
            &[wasi::Ciovec {
                buf: two.as_ptr(),
                buf_len: two.len(),
            }],
        )
    };
    // SAFETY: fd opened by step1.
    let mut stat = unsafe { wasi::fd_fdstat_get(LOG.load(Relaxed)) }
        .map(|s| s.fs_flags)
        .unwrap_or(0);
    out(&format!("log flags {stat}"));
    out(&format!(
        "renumbered continues {:?}",
        read(RENUMBERED.load(Relaxed), 3)
    ));
    // SAFETY: plain preview1 calls.
    let closed = unsafe { wasi::fd_prestat_get(4) }
        .map(|_| ())
        .map_err(|e| e.raw());
    out(&format!("closed preopen {closed:?}"));
    let again = open("s/x.txt", 0, wasi::RIGHTS_FD_READ, 0);
    out(&format!("next free fd {again}"));
    stat = u16::from(monotonic() >= CLOCK.load(Relaxed));
    out(&format!("monotonic not backwards {stat}"));
}

fn main() {}
