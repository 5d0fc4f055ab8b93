//! Processes and pipes for guests: start a program of the sandbox by name, with its stdio wired to fds of
//! this process (pipes, files, this process's own streams), wait for it, signal it — through the host's
//! `stasis` import module, which the Stasis runtime provides to every process of a sandbox.
//!
//! | import | signature | meaning |
//! |---|---|---|
//! | `pipe` | `(fds_out: *mut [u32; 2]) -> errno` | a new pipe: its read and write fds |
//! | `proc_spawn` | `(req: *const u8, len: usize, pid_out: *mut u32) -> errno` | start a program; the request is JSON: `{"program", "args", "env": [[k, v]…], "cwd", "stdin", "stdout", "stderr"}`, the last three being fds of this process (or `null`) that become the child's 0, 1 and 2 |
//! | `proc_wait` | `(pid: i32, flags: u32, pid_out: *mut u32, status_out: *mut i32) -> errno` | reap child `pid` (or any, -1) once it ends; flag 1 = do not wait |
//! | `proc_kill` | `(pid: u32, signal: u32) -> errno` | stop a process (9 kills, 15/2/1/3 terminate, 0 checks it is alive) |
//!
//! Errors are WASI errnos: `ENOENT` (no program of that name), `ENOEXEC` (not runnable), `EAGAIN` (the
//! sandbox's process limit, or a wait that would block), `ECHILD`, `ESRCH`, `EBADF`, `EMFILE`.
//! A pipe is an ordinary WASI fd: read and write it with `std::fs::File::from_raw_fd`, and close it
//! (drop the `File`) so its reader sees end-of-file.

/// A WASI errno, as the `stasis` imports return it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub u16);

impl Errno {
    /// No program has the name.
    pub const NOENT: Errno = Errno(44);
    /// The program cannot be run.
    pub const NOEXEC: Errno = Errno(45);
    /// The process limit is reached, or a wait would block.
    pub const AGAIN: Errno = Errno(6);
    /// No child to wait for.
    pub const CHILD: Errno = Errno(12);
    /// No such process.
    pub const SRCH: Errno = Errno(71);
    /// A blocking call was interrupted (Ctrl-C).
    pub const INTR: Errno = Errno(27);
    /// The host does not run processes (a module run outside a sandbox).
    pub const NOSYS: Errno = Errno(52);
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match *self {
            Errno::NOENT => "No such file or directory",
            Errno::NOEXEC => "Exec format error",
            Errno::AGAIN => "Resource temporarily unavailable",
            Errno::CHILD => "No child processes",
            Errno::SRCH => "No such process",
            Errno::INTR => "Interrupted system call",
            Errno::NOSYS => "Function not implemented",
            _ => return write!(f, "error {}", self.0),
        })
    }
}

impl std::error::Error for Errno {}

/// What to start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spawn {
    /// The program's name (`python3`, `node`, a template's name).
    pub program: String,
    /// Its argv, the first being the name it is called by.
    pub args: Vec<String>,
    /// Its whole environment.
    pub env: Vec<(String, String)>,
    /// Its working directory (it gets it as `PWD`).
    pub cwd: Option<String>,
    /// This process's fd that becomes its stdin (`None`: empty).
    pub stdin: Option<u32>,
    /// This process's fd that becomes its stdout (`None`: discarded).
    pub stdout: Option<u32>,
    /// This process's fd that becomes its stderr (`None`: discarded).
    pub stderr: Option<u32>,
}

impl Spawn {
    /// The request as the host reads it: JSON, written by hand so the guest needs no serializer.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{\"program\":");
        push_str(&mut out, &self.program);
        out.push_str(",\"args\":[");
        for (i, arg) in self.args.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_str(&mut out, arg);
        }
        out.push_str("],\"env\":[");
        for (i, (k, v)) in self.env.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('[');
            push_str(&mut out, k);
            out.push(',');
            push_str(&mut out, v);
            out.push(']');
        }
        out.push_str("],\"cwd\":");
        match &self.cwd {
            Some(cwd) => push_str(&mut out, cwd),
            None => out.push_str("null"),
        }
        for (name, fd) in [
            ("stdin", self.stdin),
            ("stdout", self.stdout),
            ("stderr", self.stderr),
        ] {
            out.push_str(&format!(",\"{name}\":"));
            match fd {
                Some(fd) => out.push_str(&fd.to_string()),
                None => out.push_str("null"),
            }
        }
        out.push('}');
        out
    }
}

/// Appends `s` as a JSON string literal.
fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(target_os = "wasi")]
mod imports {
    #[link(wasm_import_module = "stasis")]
    unsafe extern "C" {
        pub fn pipe(fds: *mut u32) -> u16;
        pub fn proc_spawn(req: *const u8, len: usize, pid: *mut u32) -> u16;
        pub fn proc_wait(pid: i32, flags: u32, pid_out: *mut u32, status: *mut i32) -> u16;
        pub fn proc_kill(pid: u32, signal: u32) -> u16;
    }
}

#[cfg(target_os = "wasi")]
fn check(errno: u16) -> Result<(), Errno> {
    if errno == 0 {
        Ok(())
    } else {
        Err(Errno(errno))
    }
}

/// Starts `spawn`; its pid.
#[cfg(target_os = "wasi")]
pub fn spawn(spawn: &Spawn) -> Result<u32, Errno> {
    let request = spawn.to_json();
    let mut pid = 0u32;
    // SAFETY: the request buffer and the out-pointer are valid for the call.
    check(unsafe { imports::proc_spawn(request.as_ptr(), request.len(), &mut pid) })?;
    Ok(pid)
}

/// A new pipe: (read fd, write fd).
#[cfg(target_os = "wasi")]
pub fn pipe() -> Result<(u32, u32), Errno> {
    let mut fds = [0u32; 2];
    // SAFETY: `fds` has room for the two fds the host writes.
    check(unsafe { imports::pipe(fds.as_mut_ptr()) })?;
    Ok((fds[0], fds[1]))
}

/// Waits for child `pid` (any child with `None`) to end and reaps it: (its pid, its exit status). With
/// `block` false, `Err(Errno::AGAIN)` when none has ended yet.
#[cfg(target_os = "wasi")]
pub fn wait(pid: Option<u32>, block: bool) -> Result<(u32, i32), Errno> {
    let (mut got, mut status) = (0u32, 0i32);
    let which = pid.map_or(-1, |p| p as i32);
    // SAFETY: both out-pointers are valid for the call.
    check(unsafe { imports::proc_wait(which, u32::from(!block), &mut got, &mut status) })?;
    Ok((got, status))
}

/// Sends `signal` to process `pid`.
#[cfg(target_os = "wasi")]
pub fn kill(pid: u32, signal: u32) -> Result<(), Errno> {
    // SAFETY: plain values.
    check(unsafe { imports::proc_kill(pid, signal) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_json_with_escapes() {
        let spawn = Spawn {
            program: "python3".into(),
            args: vec!["python3".into(), "-c".into(), "print(\"a\\b\")\n".into()],
            env: vec![("K".into(), "v\t1".into())],
            cwd: Some("/home/user".into()),
            stdin: None,
            stdout: Some(1),
            stderr: Some(5),
        };
        assert_eq!(
            spawn.to_json(),
            r#"{"program":"python3","args":["python3","-c","print(\"a\\b\")\n"],"env":[["K","v\t1"]],"cwd":"/home/user","stdin":null,"stdout":1,"stderr":5}"#
        );
    }
}
