//! Programs: a command that is neither a builtin nor a function is looked up among the sandbox's programs
//! (`python3`, `node`, registered templates) and started by the host as a child process
//! (`stasis_guest::process`), with the exported variables as its environment and the shell's working
//! directory as its own.
//!
//! Its streams are the command's: the shell's own stdin, stdout and stderr are handed over as they are,
//! so output streams straight out and an interactive program reads what the user types; anything else
//! (a pipeline stage's buffer, a here-document, a redirected file) goes through a host pipe that the
//! shell feeds and drains with `poll_oneoff` while the child runs, then the shell waits for it and its exit
//! status is `$?`. Names that are no program are `command not found` (127), as in bash.

use crate::exec::Shell;
use crate::io::{Input, Io};

/// The exported variables: a program's environment.
#[cfg(target_os = "wasi")]
fn exported_env(sh: &Shell) -> Vec<(String, String)> {
    sh.vars
        .iter()
        .filter(|(_, v)| v.exported)
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect()
}

/// Starts program `argv[0]` with `argv`, the shell's environment and working directory, and the shell's
/// fds `stdio` as its 0, 1 and 2 (`None`: empty stdin, discarded output): its pid, or the status of a
/// start that failed, reported as bash reports it (127 for no such program).
#[cfg(target_os = "wasi")]
fn spawn_program(
    sh: &Shell,
    argv: &[String],
    stdio: [Option<u32>; 3],
    io: &Io,
) -> Result<u32, i32> {
    use stasis_guest::process::{self, Errno, Spawn};

    let name = &argv[0];
    let Some(program) = program_name(name) else {
        io.eprintln(&format!("sh: {name}: command not found"));
        return Err(127);
    };
    // What the shell printed so far comes before what the program prints.
    io.out.flush();
    io.err.flush();
    let [stdin, stdout, stderr] = stdio;
    let spawn = Spawn {
        program: program.to_owned(),
        args: argv.to_vec(),
        env: exported_env(sh),
        cwd: Some(sh.cwd.clone()),
        stdin,
        stdout,
        stderr,
    };
    process::spawn(&spawn).map_err(|error| {
        let (message, status) = match error {
            Errno::NOENT | Errno::NOSYS => ("command not found".to_owned(), 127),
            Errno::NOEXEC => ("cannot execute binary file".to_owned(), 126),
            e => (e.to_string(), 126),
        };
        io.eprintln(&format!("sh: {name}: {message}"));
        status
    })
}

/// The native build (the shell's own unit tests) has no host to start programs: every name is unknown.
#[cfg(not(target_os = "wasi"))]
fn spawn_program(
    _sh: &Shell,
    argv: &[String],
    _stdio: [Option<u32>; 3],
    io: &Io,
) -> Result<u32, i32> {
    io.eprintln(&format!("sh: {}: command not found", argv[0]));
    Err(127)
}

/// Runs program `argv[0]` with `argv` and returns its exit status.
#[cfg(not(target_os = "wasi"))]
pub fn run(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    spawn_program(sh, argv, [None; 3], io).map_or_else(|status| status, |_| 127)
}

/// Runs program `argv[0]` with `argv` and returns its exit status.
#[cfg(target_os = "wasi")]
pub fn run(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    use stasis_guest::process::{self, Errno};

    let name = &argv[0];
    let mut wiring = match pump::Wiring::new(io) {
        Ok(wiring) => wiring,
        Err(e) => {
            io.eprintln(&format!("sh: {name}: cannot make a pipe: {e}"));
            return 126;
        }
    };
    let stdio = wiring.child.map(Some);
    let spawned = spawn_program(sh, argv, stdio, io);
    // The child has its own copies of the ends it was given; the shell's must go, or readers never see
    // the end of the stream.
    wiring.close_child_ends();
    let pid = match spawned {
        Ok(pid) => pid,
        Err(status) => return status,
    };
    wiring.pump(io);
    loop {
        match process::wait(Some(pid), true) {
            Ok((_, status)) => return status,
            // An interrupt (Ctrl-C) while waiting: the child got it too and ends; keep waiting for it.
            Err(Errno::INTR) => {
                crate::tty::note();
                let _ = process::kill(pid, 2);
            }
            Err(e) => {
                io.eprintln(&format!("sh: {name}: {e}"));
                return 126;
            }
        }
    }
}

/// Whether a program can be started in the background with `io`: its output must go to the shell's own
/// streams, which it is handed (nothing would drain a pipe once the shell moves on).
pub fn can_start_in_background(io: &Io) -> bool {
    io.out.raw_fd().is_some() && io.err.raw_fd().is_some()
}

/// Starts program `argv[0]` in the background (stdin empty, as bash gives a non-interactive shell's
/// background jobs): its pid, or the status of a failed start (127 for no such program).
pub fn start_in_background(sh: &mut Shell, argv: &[String], io: &Io) -> Result<u32, i32> {
    spawn_program(sh, argv, [None, io.out.raw_fd(), io.err.raw_fd()], io)
}

/// Starts pipeline stage `argv` with its stdin `input` and its stdout a new pipe, not waiting for it: its
/// pid (or the status of a start that failed) and the pipe's read end as the next stage's input. `None`
/// when the stage cannot stream: its stderr is not the shell's own, or its input is a reader or more
/// bytes than a pipe holds (it would need feeding while the shell runs the next stage).
#[cfg(target_os = "wasi")]
pub fn start_stage(
    sh: &mut Shell,
    argv: &[String],
    input: &Input,
    io: &Io,
) -> Option<(Result<i32, u32>, Input)> {
    use stasis_guest::process;
    use std::io::Write as _;
    use std::os::fd::FromRawFd;

    let stderr = io.err.raw_fd()?;
    let handed = input.raw_fd();
    if handed.is_none() && input.bytes_left()? > PIPE_BYTES {
        return None;
    }
    // SAFETY (every use): fds just made by the host's `pipe`, owned here alone.
    let close = |fd: u32| drop(unsafe { std::fs::File::from_raw_fd(fd as i32) });
    let (out_r, out_w) = process::pipe().ok()?;
    let stdin_fd = match handed {
        Some(fd) => (fd, false),
        None => {
            let Ok((r, w)) = process::pipe() else {
                close(out_r);
                close(out_w);
                return None;
            };
            // Fits in the pipe: written at once, then closed (the writer dropped) so the program sees
            // the end.
            let mut writer = unsafe { std::fs::File::from_raw_fd(w as i32) };
            let _ = writer.write_all(&input.read_all());
            (r, true)
        }
    };
    let spawned = spawn_program(sh, argv, [Some(stdin_fd.0), Some(out_w), Some(stderr)], io);
    // The program has its own copies now.
    close(out_w);
    if let (fd, true) = stdin_fd {
        close(fd);
    }
    let next = Input::pipe(out_r);
    Some(match spawned {
        Ok(pid) => (Err(pid), next),
        Err(status) => (Ok(status), next),
    })
}

#[cfg(not(target_os = "wasi"))]
pub fn start_stage(
    _sh: &mut Shell,
    _argv: &[String],
    _input: &Input,
    _io: &Io,
) -> Option<(Result<i32, u32>, Input)> {
    None
}

/// Largest input handed to a streaming stage up front: what a pipe holds, so writing it never waits.
#[cfg(target_os = "wasi")]
const PIPE_BYTES: usize = 64 * 1024;

/// Waits for background program `pid` (every job with `None`) and returns its status — what `wait` does.
pub fn wait_jobs(sh: &mut Shell, pid: Option<u32>, io: &Io) -> i32 {
    let pids: Vec<u32> = match pid {
        Some(pid) if sh.jobs.contains(&pid) => vec![pid],
        Some(pid) => {
            io.eprintln(&format!("sh: wait: pid {pid} is not a child of this shell"));
            return 127;
        }
        None => sh.jobs.clone(),
    };
    let mut status = 0;
    for pid in pids {
        sh.jobs.retain(|&j| j != pid);
        status = reap(pid);
    }
    status
}

/// Waits for program `pid` to end and returns its status (127 when it cannot be waited for).
#[cfg(target_os = "wasi")]
pub fn reap(pid: u32) -> i32 {
    loop {
        match stasis_guest::process::wait(Some(pid), true) {
            Ok((_, status)) => return status,
            Err(stasis_guest::process::Errno::INTR) => crate::tty::note(),
            Err(_) => return 127,
        }
    }
}

/// Waits for program `pid` to end and returns its status (127 when it cannot be waited for).
#[cfg(not(target_os = "wasi"))]
pub fn reap(_pid: u32) -> i32 {
    127
}

/// Sends `signal` to `pid` — what `kill` does; false when there is no such process.
pub fn signal(pid: u32, signal: u32) -> bool {
    #[cfg(target_os = "wasi")]
    {
        stasis_guest::process::kill(pid, signal).is_ok()
    }
    #[cfg(not(target_os = "wasi"))]
    {
        let _ = (pid, signal);
        false
    }
}

/// The program a command names: its last path component, so `/usr/bin/python3` is `python3`.
#[cfg(target_os = "wasi")]
fn program_name(name: &str) -> Option<&str> {
    let program = name.rsplit('/').next().unwrap_or(name);
    (!program.is_empty()).then_some(program)
}

#[cfg(target_os = "wasi")]
mod pump {
    //! The shell's side of a child's pipes: feeding its stdin from a buffer and draining its output
    //! into the command's sinks, multiplexed with `poll_oneoff` so a child that fills one pipe while the
    //! shell waits on another never deadlocks.

    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;

    use stasis_guest::process;

    use crate::io::{Io, Sink};

    /// How a child's streams are wired.
    pub struct Wiring {
        /// The fds the child gets as 0, 1, 2 (the shell's own, or pipe ends to close after the spawn).
        pub child: [u32; 3],
        /// Which of `child` are pipe ends the shell made (and must close).
        made: [bool; 3],
        /// The write end of the child's stdin pipe and what to write into it.
        feed: Option<(File, Vec<u8>)>,
        /// The read ends of the child's stdout/stderr pipes and where their bytes go.
        drains: Vec<(File, Sink)>,
    }

    fn pipe() -> std::io::Result<(u32, u32)> {
        process::pipe().map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// A `File` owning fd `fd`.
    fn file(fd: u32) -> File {
        // SAFETY: the fd was just made by `pipe` and nothing else owns it.
        unsafe { File::from_raw_fd(fd as i32) }
    }

    impl Wiring {
        pub fn new(io: &Io) -> std::io::Result<Self> {
            let mut wiring = Wiring {
                child: [0, 1, 2],
                made: [false; 3],
                feed: None,
                drains: Vec::new(),
            };
            match io.stdin.raw_fd() {
                Some(fd) => wiring.child[0] = fd,
                None => {
                    let (r, w) = pipe()?;
                    wiring.child[0] = r;
                    wiring.made[0] = true;
                    wiring.feed = Some((file(w), io.stdin.read_all()));
                }
            }
            match io.out.raw_fd() {
                Some(fd) => wiring.child[1] = fd,
                None => {
                    let (r, w) = pipe()?;
                    wiring.child[1] = w;
                    wiring.made[1] = true;
                    wiring.drains.push((file(r), io.out.clone()));
                }
            }
            match io.err.raw_fd() {
                Some(fd) => wiring.child[2] = fd,
                // `2>&1` into a buffer: both streams into the one pipe, in the order written.
                None if io.err.same(&io.out) && wiring.made[1] => {
                    wiring.child[2] = wiring.child[1];
                }
                None => {
                    let (r, w) = pipe()?;
                    wiring.child[2] = w;
                    wiring.made[2] = true;
                    wiring.drains.push((file(r), io.err.clone()));
                }
            }
            Ok(wiring)
        }

        /// Closes the shell's copies of the ends the child was given.
        pub fn close_child_ends(&mut self) {
            for i in 0..3 {
                if self.made[i] {
                    drop(file(self.child[i]));
                    self.made[i] = false;
                }
            }
        }

        /// Feeds and drains until the child's output streams end.
        pub fn pump(mut self, _io: &Io) {
            let mut offset = 0usize;
            loop {
                let mut subs: Vec<[u8; 48]> = Vec::new();
                if let Some((w, _)) = &self.feed {
                    subs.push(subscription(0, fd_of(w), FD_WRITE));
                }
                for (i, (r, _)) in self.drains.iter().enumerate() {
                    subs.push(subscription(1 + i as u64, fd_of(r), FD_READ));
                }
                if subs.is_empty() {
                    return;
                }
                let Some(events) = poll(&subs) else { return };
                let mut ended = Vec::new();
                for (userdata, nbytes) in events {
                    if userdata == 0 {
                        let Some((w, data)) = &mut self.feed else {
                            continue;
                        };
                        let room = usize::try_from(nbytes).unwrap_or(usize::MAX).max(1);
                        let end = data.len().min(offset + room);
                        match w.write(&data[offset..end]) {
                            Ok(n) => offset += n,
                            // The child stopped reading (EPIPE): the rest is not wanted.
                            Err(_) => offset = data.len(),
                        }
                        if offset >= data.len() {
                            self.feed = None;
                        }
                    } else {
                        let i = (userdata - 1) as usize;
                        let Some((r, sink)) = self.drains.get_mut(i) else {
                            continue;
                        };
                        let mut buf = [0u8; 16 * 1024];
                        match r.read(&mut buf) {
                            Ok(0) | Err(_) => ended.push(i),
                            Ok(n) => sink.put(&buf[..n]),
                        }
                    }
                }
                ended.sort_unstable();
                for i in ended.into_iter().rev() {
                    self.drains.remove(i);
                }
            }
        }
    }

    const FD_READ: u8 = 1;
    const FD_WRITE: u8 = 2;

    fn fd_of(f: &File) -> u32 {
        use std::os::fd::AsRawFd;
        f.as_raw_fd() as u32
    }

    /// A WASI `subscription` for `fd`: userdata at 0, the event type at 8, the fd at 16.
    fn subscription(userdata: u64, fd: u32, kind: u8) -> [u8; 48] {
        let mut sub = [0u8; 48];
        sub[0..8].copy_from_slice(&userdata.to_le_bytes());
        sub[8] = kind;
        sub[16..20].copy_from_slice(&fd.to_le_bytes());
        sub
    }

    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    unsafe extern "C" {
        #[link_name = "poll_oneoff"]
        fn poll_oneoff(subs: *const u8, events: *mut u8, n: usize, nevents: *mut usize) -> u16;
    }

    /// Waits until one of `subs` is ready: (userdata, nbytes) of each event, `None` on an error.
    fn poll(subs: &[[u8; 48]]) -> Option<Vec<(u64, u64)>> {
        let mut events = vec![[0u8; 32]; subs.len()];
        let mut n = 0usize;
        // SAFETY: both arrays hold `subs.len()` entries of the sizes WASI defines.
        let errno = unsafe {
            poll_oneoff(
                subs.as_ptr().cast(),
                events.as_mut_ptr().cast(),
                subs.len(),
                &mut n,
            )
        };
        if errno != 0 {
            // An interrupt: try again (the child was told too); anything else ends the pump.
            return (errno == 27).then(Vec::new);
        }
        Some(
            events[..n.min(events.len())]
                .iter()
                .map(|e| {
                    let userdata = u64::from_le_bytes(e[0..8].try_into().unwrap_or_default());
                    let nbytes = u64::from_le_bytes(e[16..24].try_into().unwrap_or_default());
                    (userdata, nbytes)
                })
                .collect(),
        )
    }
}
