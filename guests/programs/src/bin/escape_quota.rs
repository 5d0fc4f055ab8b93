//! Pushes one limit of the host until it answers with an errno, chosen by the first argument: `bytes` (disk
//! bytes through write, set_len and fd_allocate), `files` (file, directory, symlink and hard link creation),
//! `fds` (open files) or `path` (path length). Prints what it managed and the errno it got.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};

use stasis_test_programs::{show, symlink};

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn bytes() {
    let mut f = File::create("/big").expect("create /big");
    let chunk = [7u8; 1000];
    let mut written = 0usize;
    loop {
        match f.write(&chunk) {
            Ok(n) if n > 0 => written += n,
            Ok(_) => break println!("write: zero after {written}"),
            Err(e) => break println!("write: {written} then errno {}", errno(&e)),
        }
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f) as u32;
    let one = [1u8];
    // SAFETY: a plain preview1 call on an fd this program owns, with a live buffer.
    let pwrite = unsafe {
        wasi::fd_pwrite(
            fd,
            &[wasi::Ciovec {
                buf: one.as_ptr(),
                buf_len: 1,
            }],
            50_000,
        )
    };
    println!("fd_pwrite past end: {:?}", pwrite.map_err(|e| e.raw()));
    // Overwriting existing bytes needs no new space.
    // SAFETY: as above.
    let pwrite = unsafe {
        wasi::fd_pwrite(
            fd,
            &[wasi::Ciovec {
                buf: one.as_ptr(),
                buf_len: 1,
            }],
            0,
        )
    };
    println!("fd_pwrite inside: {:?}", pwrite.map_err(|e| e.raw()));
    show("set_len grow", f.set_len(1 << 20));
    // SAFETY: a plain preview1 call on an fd this program owns.
    let alloc = unsafe { wasi::fd_allocate(fd, 0, 1 << 20) };
    println!("fd_allocate: {:?}", alloc.map_err(|e| e.raw()));
    show("set_len shrink", f.set_len(0));
    // The offset is still past the end; rewind so the write reuses the space just freed.
    show("rewind", f.seek(SeekFrom::Start(0)));
    show("write after shrink", f.write_all(&chunk));
    drop(f);
    show("remove", fs::remove_file("/big"));
    show("write after remove", fs::write("/small", [1u8; 3000]));
}

fn files() {
    let mut made = 0;
    loop {
        match File::create(format!("/f{made}")) {
            Ok(_) => made += 1,
            Err(e) => break println!("create: {made} then errno {}", errno(&e)),
        }
    }
    show("mkdir", fs::create_dir("/d"));
    show("symlink", symlink("f0", "/s"));
    show("hard link", fs::hard_link("/f0", "/h"));
    show(
        "open existing",
        OpenOptions::new()
            .write(true)
            .create(true)
            .open("/f0")
            .map(drop),
    );
    show("remove", fs::remove_file("/f0"));
    show("create after remove", File::create("/again").map(drop));
}

fn fds() {
    fs::write("/x", b"x").expect("write /x");
    let mut open = Vec::new();
    loop {
        match File::open("/x") {
            Ok(f) => open.push(f),
            Err(e) => break println!("open: {} then errno {}", open.len(), errno(&e)),
        }
    }
    open.pop();
    show("open after close", File::open("/x").map(drop));
}

fn path() {
    let long = format!("/{}", "a".repeat(5000));
    show("long path", fs::metadata(&long).map(drop));
    show("long mkdir", fs::create_dir(&long));
    show(
        "short path",
        fs::metadata(format!("/{}", "a".repeat(100))).map(drop),
    );
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("bytes") => bytes(),
        Some("files") => files(),
        Some("fds") => fds(),
        Some("path") => path(),
        other => panic!("unknown mode {other:?}"),
    }
}
