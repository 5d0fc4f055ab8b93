//! A guest that exercises the `stasis` process imports directly, for the kernel's tests:
//!
//! - `procs copy [LIMIT]`: copies stdin to stdout (all of it, or the first LIMIT bytes, then exits 0);
//! - `procs epipe`: starts `procs copy 10` reading a pipe, writes into the pipe until a write fails, and
//!   prints how the write failed and the child's status;
//! - `procs many N`: starts N children (`procs copy`, empty stdin) until one is refused, prints how many
//!   started and why the next was refused, then waits for them all;
//! - `procs nested DEPTH`: prints its depth and, above 0, runs itself one level deeper with its own
//!   stdout, exiting with the child's status plus one;
//! - `procs bad`: passes `proc_spawn` requests the host must refuse (not JSON, empty argv, over the size
//!   bound, a bad out-pointer) and waits for and signals processes that do not exist, printing each errno;
//! - `procs yes`: writes `y` lines until a write fails, then exits 141 (as `yes` ends by SIGPIPE);
//! - `procs slow MS`: copies stdin to stdout a line at a time, sleeping MS milliseconds after each, so
//!   that a pause finds bytes waiting in its stdin pipe.
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;

use stasis_guest::process::{self, Spawn};

fn child(args: &[&str], stdin: Option<u32>) -> Spawn {
    Spawn {
        program: "procs".into(),
        args: std::iter::once("procs")
            .chain(args.iter().copied())
            .map(String::from)
            .collect(),
        env: Vec::new(),
        cwd: None,
        stdin,
        stdout: Some(1),
        stderr: Some(2),
    }
}

fn copy(limit: Option<usize>) {
    let mut input = std::io::stdin();
    let mut out = std::io::stdout();
    let mut left = limit.unwrap_or(usize::MAX);
    let mut buf = [0u8; 8192];
    while left > 0 {
        let want = buf.len().min(left);
        match input.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => {
                if out.write_all(&buf[..n]).is_err() {
                    std::process::exit(3);
                }
                left -= n;
            }
            Err(e) => {
                eprintln!("copy: {e}");
                std::process::exit(4);
            }
        }
    }
    let _ = out.flush();
}

fn epipe() {
    let (r, w) = process::pipe().expect("a pipe");
    let pid = process::spawn(&child(&["copy", "10"], Some(r))).expect("spawn");
    // SAFETY: both fds were just made by `pipe` and are owned here alone.
    drop(unsafe { File::from_raw_fd(r as i32) });
    let mut w = unsafe { File::from_raw_fd(w as i32) };
    let mut written = 0usize;
    let error = loop {
        match w.write(b"yyyyyyyyyyyyyyyy") {
            Ok(n) => written += n,
            Err(e) => break e,
        }
    };
    let (_, status) = process::wait(Some(pid), true).expect("wait");
    println!(
        "\nwrite failed: {:?} after at least 10 bytes: {}; child status {status}",
        error.kind(),
        written >= 10
    );
}

fn many(n: usize) {
    let mut started = Vec::new();
    let mut refused = None;
    for _ in 0..n {
        match process::spawn(&child(&["copy"], None)) {
            Ok(pid) => started.push(pid),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    println!(
        "started {}; refused: {:?}",
        started.len(),
        refused.map(|e| e.to_string())
    );
    for pid in started {
        process::wait(Some(pid), true).expect("wait");
    }
    println!(
        "all reaped; next wait: {:?}",
        process::wait(None, false).err().map(|e| e.0)
    );
}

fn nested(depth: u32) -> i32 {
    println!("depth {depth}");
    let _ = std::io::stdout().flush();
    if depth == 0 {
        return 0;
    }
    let pid = process::spawn(&child(&["nested", &(depth - 1).to_string()], None)).expect("spawn");
    let (_, status) = process::wait(Some(pid), true).expect("wait");
    status + 1
}

fn slow(ms: u64) {
    use std::io::BufRead;
    let mut out = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else {
            std::process::exit(4)
        };
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            std::process::exit(3);
        }
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

#[link(wasm_import_module = "stasis")]
unsafe extern "C" {
    fn proc_spawn(req: *const u8, len: usize, pid: *mut u32) -> u16;
}

fn bad() {
    let mut pid = 0u32;
    let raw = |req: &[u8], len: usize, out: *mut u32| unsafe { proc_spawn(req.as_ptr(), len, out) };
    let empty_args =
        br#"{"program":"procs","args":[],"env":[],"stdin":null,"stdout":null,"stderr":null}"#;
    println!("not json: {}", raw(b"{nope", 5, &mut pid));
    println!(
        "empty argv: {}",
        raw(empty_args, empty_args.len(), &mut pid)
    );
    println!("over the bound: {}", raw(b"{}", (1 << 20) + 1, &mut pid));
    let valid = process::Spawn {
        program: "procs".into(),
        args: vec!["procs".into(), "copy".into()],
        ..Default::default()
    }
    .to_json();
    println!(
        "bad out-pointer: {}",
        raw(valid.as_bytes(), valid.len(), usize::MAX as *mut u32)
    );
    println!(
        "wait for no child: {:?}",
        process::wait(None, true).err().map(|e| e.0)
    );
    println!(
        "kill no process: {:?}",
        process::kill(999_999, 9).err().map(|e| e.0)
    );
    println!(
        "bad signal: {:?}",
        process::kill(1, 1234).err().map(|e| e.0)
    );
}

fn yes() -> ! {
    let mut out = std::io::stdout();
    loop {
        if out.write_all(b"y\n").is_err() {
            std::process::exit(141);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["copy"] => copy(None),
        ["copy", limit] => copy(limit.parse().ok()),
        ["epipe"] => epipe(),
        ["many", n] => many(n.parse().unwrap_or(0)),
        ["nested", d] => std::process::exit(nested(d.parse().unwrap_or(0))),
        ["slow", ms] => slow(ms.parse().unwrap_or(0)),
        ["yes"] => yes(),
        ["bad"] => bad(),
        _ => {
            eprintln!(
                "usage: procs copy [LIMIT] | epipe | many N | nested DEPTH | slow MS | yes | bad"
            );
            std::process::exit(2);
        }
    }
}
