//! The kernel: processes starting processes. The `sh` guest runs registered programs as children with
//! their streams wired through host pipes; the `procs` guest drives the `stasis` imports directly (end of
//! file, `EPIPE`, the process limit, nested spawns); and the sandbox lists and kills children.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use stasis::{Runtime, Sandbox, SandboxLimits, SandboxOptions, Template};
use tempfile::TempDir;

use crate::common::runtime_with_limits;

/// A runtime where `procs` and `sh` are programs, and a sandbox of the shell.
struct Fixture {
    _tmp: TempDir,
    _runtime: Runtime,
    sh: Template,
    sandbox: Sandbox,
}

impl Fixture {
    fn new(limits: SandboxLimits) -> Result<Self> {
        let (tmp, runtime) = runtime_with_limits(limits)?;
        let sh = runtime.load_template("sh", &stasis_guests::bytes(stasis_guests::SH))?;
        let procs = runtime.load_template("procs", &stasis_guests::bytes(stasis_guests::PROCS))?;
        runtime.register_program("procs", procs.sha256());
        runtime.register_program("sh", sh.sha256());
        let sandbox = runtime.create_sandbox(&sh, SandboxOptions::default())?;
        Ok(Self {
            _tmp: tmp,
            _runtime: runtime,
            sh,
            sandbox,
        })
    }

    /// Runs `sh -c line` to completion: (status, stdout, stderr).
    fn sh(&mut self, line: &str) -> Result<(i32, String, String)> {
        let out = self
            .sandbox
            .run(&self.sh, &["-c".into(), line.into()], b"")?;
        Ok((
            out.exit_code,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}

#[test]
fn the_shell_runs_a_program_with_its_arguments_streams_and_status() -> Result<()> {
    let mut f = Fixture::new(SandboxLimits::default())?;
    let (status, out, err) = f.sh("echo one; printf 'two\\nthree\\n' | procs copy; echo four")?;
    assert_eq!((status, err.as_str()), (0, ""));
    assert_eq!(
        out, "one\ntwo\nthree\nfour\n",
        "output in the order written"
    );
    let (status, out, _) = f.sh("X=$(echo hello | procs copy 4); echo \"[$X] $?\"")?;
    assert_eq!((status, out.as_str()), (0, "[hell] 0\n"));
    let (status, _, err) = f.sh("procs bogus")?;
    assert_eq!(status, 2, "the program's own exit status is $?");
    assert!(err.contains("usage: procs"), "{err}");
    let (status, _, err) = f.sh("no-such-program")?;
    assert_eq!(status, 127);
    assert_eq!(err, "sh: no-such-program: command not found\n");
    let (status, out, _) =
        f.sh("echo abc > /in.txt; procs copy < /in.txt > /out.txt; cat /out.txt")?;
    assert_eq!(
        (status, out.as_str()),
        (0, "abc\n"),
        "redirections apply to programs"
    );
    Ok(())
}

#[test]
fn megabytes_go_through_a_pipeline_of_programs_and_builtins() -> Result<()> {
    let mut f = Fixture::new(SandboxLimits::default())?;
    // 200,000 lines (1.3 MB) through three programs, twenty times the pipe's buffer.
    let (status, out, err) = f.sh("seq 1 200000 | procs copy | procs copy | procs copy | wc -l")?;
    assert_eq!((status, err.as_str()), (0, ""));
    assert_eq!(out.trim(), "200000");
    let (_, out, _) = f.sh("seq 1 200000 | procs copy | tail -1")?;
    assert_eq!(out, "200000\n");
    Ok(())
}

#[test]
fn a_writer_whose_reader_exited_gets_epipe() -> Result<()> {
    let mut f = Fixture::new(SandboxLimits::default())?;
    let (status, out, err) = f.sh("procs epipe")?;
    assert_eq!((status, err.as_str()), (0, ""));
    assert_eq!(
        out,
        "yyyyyyyyyy\nwrite failed: BrokenPipe after at least 10 bytes: true; child status 0\n"
    );
    Ok(())
}

#[test]
fn spawns_nest_and_statuses_come_back_up() -> Result<()> {
    let mut f = Fixture::new(SandboxLimits::default())?;
    let (status, out, _) = f.sh("procs nested 4")?;
    assert_eq!(out, "depth 4\ndepth 3\ndepth 2\ndepth 1\ndepth 0\n");
    assert_eq!(status, 4);
    // A shell started by the shell, starting a program.
    let (status, out, _) = f.sh("sh -c 'echo inner | procs copy; exit 7'; echo \"outer $?\"")?;
    assert_eq!((status, out.as_str()), (0, "inner\nouter 7\n"));
    Ok(())
}

#[test]
fn the_process_limit_refuses_a_spawn_clearly_and_loses_nothing() -> Result<()> {
    let mut f = Fixture::new(SandboxLimits {
        max_processes: 6,
        ..SandboxLimits::default()
    })?;
    let (status, out, err) = f.sh("procs many 50")?;
    assert_eq!((status, err.as_str()), (0, ""));
    // The limit bounds the children in all: `procs` itself is the sixth.
    assert_eq!(
        out,
        "started 5; refused: Some(\"Resource temporarily unavailable\")\nall reaped; next wait: Some(12)\n"
    );
    // Everything ended and was reaped: the sandbox is as before.
    assert!(f.sandbox.children().is_empty());
    let (status, out, _) = f.sh("echo ok | procs copy")?;
    assert_eq!((status, out.as_str()), (0, "ok\n"));
    Ok(())
}

#[test]
fn children_are_listed_with_their_parent_and_killed_by_pid() -> Result<()> {
    let mut f = Fixture::new(SandboxLimits::default())?;
    let stdin = stasis::wasi::StdinPipe::new(1024);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let io = stasis::CommandIo {
        stdin: stasis::wasi::Stdin::Pipe(stdin.clone()),
        stdout: stasis::wasi::OutputSink::capture(1 << 20).with_callback(move |b| {
            sink.lock().map(|mut s| s.extend_from_slice(b)).ok();
        }),
        stderr: stasis::wasi::OutputSink::capture(1 << 20),
    };
    let sh = f.sh.clone();
    // The child reads the shell's own stdin, which never ends: it runs until it is killed.
    let command = f.sandbox.start_command(
        &sh,
        &["-c".into(), "procs copy; echo \"status $?\"".into()],
        &[],
        io,
    )?;
    let parent = command.control().pid();
    let thread = std::thread::spawn(move || command.run());
    let deadline = Instant::now() + Duration::from_secs(60);
    let child = loop {
        if let Some(child) = f.sandbox.children().into_iter().next() {
            break child;
        }
        if Instant::now() > deadline {
            bail!("the child never appeared");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(child.ppid, parent);
    assert_eq!(child.args, ["procs", "copy"]);
    assert!(child.running);
    assert!(
        f.sandbox.processes().iter().any(|p| p.pid == child.pid),
        "a running child is a process of the sandbox"
    );
    stdin.write(b"typed\n")?;
    while !seen.lock().map(|s| s.ends_with(b"typed\n")).unwrap_or(true) {
        if Instant::now() > deadline {
            bail!("the child never echoed its input");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(f.sandbox.kill_process(child.pid));
    let output = thread
        .join()
        .map_err(|_| anyhow::anyhow!("the command panicked"))?;
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "typed\nstatus 137\n",
        "the child read its parent's stdin, and its kill is the parent's $?"
    );
    assert!(f.sandbox.children().is_empty());
    Ok(())
}

#[test]
fn a_pause_ends_a_process_tree_and_the_resumed_sandbox_runs_programs_again() -> Result<()> {
    let mut f = Fixture::new(SandboxLimits::default())?;
    let stdin = stasis::wasi::StdinPipe::new(1024);
    let io = stasis::CommandIo {
        stdin: stasis::wasi::Stdin::Pipe(stdin),
        stdout: stasis::wasi::OutputSink::capture(1 << 20),
        stderr: stasis::wasi::OutputSink::capture(1 << 20),
    };
    let sh = f.sh.clone();
    let command = f.sandbox.start_command(
        &sh,
        &["-c".into(), "echo file > /kept.txt; procs copy".into()],
        &[],
        io,
    )?;
    let thread = std::thread::spawn(move || command.run());
    let deadline = Instant::now() + Duration::from_secs(60);
    while f.sandbox.children().is_empty() {
        if Instant::now() > deadline {
            bail!("the child never appeared");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let blob = f._tmp.path().join("tree.blob");
    let report = f.sandbox.pause(&blob)?;
    assert_eq!(report.suspended, 0, "a process tree is not suspended yet");
    let output = thread
        .join()
        .map_err(|_| anyhow::anyhow!("the command panicked"))?;
    assert_eq!(output.exit_code, 137);
    assert_eq!(output.stopped, Some(stasis::wasi::StopReason::Pause));
    let mut resumed = f._runtime.resume(&blob, stasis::ResumeOptions::default())?;
    assert!(resumed.children().is_empty());
    let out = resumed.run(&sh, &["-c".into(), "procs copy < /kept.txt".into()], b"")?;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "file\n");
    Ok(())
}
