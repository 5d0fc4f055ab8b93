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
        let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if let Some(trap) = &out.trap {
            // A trap is never expected: say what it was, so an assertion on stderr shows it.
            stderr.push_str(&format!("[trap: {trap}]"));
        }
        Ok((
            out.exit_code,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        ))
    }
}

/// Output collected from a streaming sink, shared with the test.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;

/// Streams that collect stdout into `seen`.
fn collecting(seen: &Seen) -> stasis::CommandIo {
    let sink = seen.clone();
    stasis::CommandIo {
        stdin: stasis::wasi::Stdin::Empty,
        stdout: stasis::wasi::OutputSink::stream(1 << 24, move |b| {
            if let Ok(mut s) = sink.lock() {
                s.extend_from_slice(b);
            }
        }),
        stderr: stasis::wasi::OutputSink::discard(),
    }
}

fn seen_text(seen: &Seen) -> String {
    String::from_utf8_lossy(&seen.lock().map(|s| s.clone()).unwrap_or_default()).into_owned()
}

/// Streams with stdin from `pipe` and stdout collected into `seen`.
fn piped(pipe: &stasis::wasi::StdinPipe, seen: &Seen) -> stasis::CommandIo {
    stasis::CommandIo {
        stdin: stasis::wasi::Stdin::Pipe(pipe.clone()),
        ..collecting(seen)
    }
}

/// Polls `done` every 10 ms for up to a minute; fails saying `what` did not happen.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        if Instant::now() > deadline {
            bail!("{what} never happened");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

impl Fixture {
    /// Starts `sh -c line` with `io` on a thread of its own: the shell's pid and the thread.
    fn start(
        &mut self,
        line: &str,
        io: stasis::CommandIo,
    ) -> Result<(u32, std::thread::JoinHandle<stasis::CommandOutput>)> {
        let sh = self.sh.clone();
        let command = self
            .sandbox
            .start_command(&sh, &["-c".into(), line.into()], &[], io)?;
        let pid = command.control().pid();
        Ok((pid, std::thread::spawn(move || command.run())))
    }

    /// The first child, once one has started.
    fn first_child(&mut self) -> Result<stasis::ChildInfo> {
        let mut found = None;
        wait_until("a child's start", || {
            found = self.sandbox.children().into_iter().next();
            found.is_some()
        })?;
        found.ok_or_else(|| anyhow::anyhow!("no child"))
    }
}

/// The output of a command run on a thread.
fn joined(thread: std::thread::JoinHandle<stasis::CommandOutput>) -> Result<stasis::CommandOutput> {
    thread
        .join()
        .map_err(|_| anyhow::anyhow!("the command panicked"))
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
fn programs_run_in_the_background_and_wait_and_kill_reach_them() -> Result<()> {
    let mut f = Fixture::new(SandboxLimits::default())?;
    let (status, out, _) =
        f.sh("procs nested 2 & pid=$!; wait $pid; echo \"status $? of $pid\"")?;
    assert_eq!(status, 0);
    let pid = out.trim_end().rsplit(' ').next().unwrap_or_default();
    assert!(pid.parse::<u32>().is_ok(), "$! is a pid: {out:?}");
    assert_eq!(
        out,
        format!("depth 2\ndepth 1\ndepth 0\nstatus 2 of {pid}\n")
    );
    let (_, out, _) = f.sh("procs nested 0 & procs nested 0 & wait; echo done")?;
    assert_eq!(
        out, "depth 0\ndepth 0\ndone\n",
        "`wait` waits for every job"
    );
    let (_, out, _) = f.sh("sh -c 'sleep 30' & kill $!; wait $!; echo \"status $?\"")?;
    assert_eq!(out, "status 143\n", "a SIGTERM ends a background program");
    let (_, out, _) = f.sh("sh -c 'sleep 30' & kill -9 $!; wait $!; echo \"status $?\"")?;
    assert_eq!(out, "status 137\n");
    let (_, out, _) = f.sh("sh -c 'sleep 30' & kill -INT $!; wait $!; echo \"status $?\"")?;
    assert_eq!(out, "status 130\n", "a SIGINT is 130");
    let (status, _, err) = f.sh("wait 99999")?;
    assert_eq!(status, 127);
    assert_eq!(err, "sh: wait: pid 99999 is not a child of this shell\n");
    let (status, _, err) = f.sh("kill 99999")?;
    assert_eq!(status, 1);
    assert_eq!(err, "sh: kill: (99999) - No such process\n");
    let (status, _, err) = f.sh("no-such-program &")?;
    assert_eq!(
        (status, err.as_str()),
        (127, "sh: no-such-program: command not found\n")
    );
    Ok(())
}

#[test]
fn a_program_streams_into_the_next_stage_and_ends_when_its_reader_does() -> Result<()> {
    let mut f = Fixture::new(SandboxLimits::default())?;
    // An endless producer into a builtin: `head` ends, the producer's next write is a broken pipe.
    let (status, out, err) = f.sh("procs yes | head -2")?;
    assert_eq!((status, out.as_str()), (0, "y\ny\n"), "{err}");
    let (status, out, _) = f.sh("set -o pipefail; procs yes | head -1")?;
    assert_eq!(
        (status, out.as_str()),
        (141, "y\n"),
        "the producer's status, with pipefail"
    );
    // Into another program, directly: both run at once.
    let (status, out, _) = f.sh("procs yes | procs copy 6; echo \"$?\"")?;
    assert_eq!((status, out.as_str()), (0, "y\ny\ny\n0\n"));
    // A stage that names no program fails alone; the others still run.
    let (status, out, err) = f.sh("no-such-program | procs copy; echo \"$?\"")?;
    assert_eq!((status, out.as_str()), (0, "0\n"));
    assert_eq!(err, "sh: no-such-program: command not found\n");
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
    let (stdin, seen) = (stasis::wasi::StdinPipe::new(1024), Seen::default());
    // The child reads the shell's own stdin, which never ends: it runs until it is killed.
    let (parent, thread) = f.start("procs copy; echo \"status $?\"", piped(&stdin, &seen))?;
    let child = f.first_child()?;
    assert_eq!(child.ppid, parent);
    assert_eq!(child.args, ["procs", "copy"]);
    assert!(child.running);
    assert!(
        f.sandbox.processes().iter().any(|p| p.pid == child.pid),
        "a running child is a process of the sandbox"
    );
    stdin.write(b"typed\n")?;
    wait_until("the child's echo", || seen_text(&seen).ends_with("typed\n"))?;
    assert!(f.sandbox.kill_process(child.pid));
    joined(thread)?;
    assert_eq!(
        seen_text(&seen),
        "typed\nstatus 137\n",
        "the child read its parent's stdin, and its kill is the parent's $?"
    );
    assert!(f.sandbox.children().is_empty());
    Ok(())
}

/// The line the tree runs: `seq` fills the pipe into a slow program at once (most of it still waits there
/// at the first pause), whose output the shell collects; then a shell started by the shell runs a slow
/// program that prints as it goes. At a pause, processes are mid-run and each waits in a different call
/// (poll on a pipe, a sleep, a wait for a child).
const TREE: &str =
    "seq 1 120 | procs slow 5 | sh -c 'procs slow 3; echo inner done'; echo \"outer $?\"";

#[test]
fn a_process_tree_paused_with_bytes_in_its_pipes_finishes_as_if_never_paused() -> Result<()> {
    let mut f = Fixture::new(SandboxLimits::default())?;
    let expected = {
        let seen = Seen::default();
        let (_, thread) = f.start(TREE, collecting(&seen))?;
        assert_eq!(joined(thread)?.exit_code, 0);
        seen_text(&seen)
    };
    assert!(expected.starts_with("1\n2\n") && expected.ends_with("120\ninner done\nouter 0\n"));
    for pause_after_ms in [150, 450] {
        let seen = Seen::default();
        let (_, thread) = f.start(TREE, collecting(&seen))?;
        std::thread::sleep(Duration::from_millis(pause_after_ms));
        let blob = f._tmp.path().join(format!("tree-{pause_after_ms}.blob"));
        let report = f.sandbox.pause(&blob)?;
        let first = joined(thread)?;
        assert!(
            first.suspended,
            "the shell is suspended, not ended: {first:?}"
        );
        assert!(
            report.suspended >= 2,
            "the shell and the programs it started are suspended ({} were)",
            report.suspended
        );
        let mut resumed = f._runtime.resume(&blob, stasis::ResumeOptions::default())?;
        let children = resumed.children();
        assert!(!children.is_empty(), "the kernel's table came back");
        let top: Vec<u32> = resumed.suspended().iter().map(|p| p.pid).collect();
        assert_eq!(
            top.len(),
            1,
            "only the command the embedder started is its to continue"
        );
        let out = resumed.continue_command(top[0], collecting(&seen))?.run();
        assert_eq!(out.exit_code, 0, "{out:?}");
        assert_eq!(
            seen_text(&seen),
            expected,
            "paused after {pause_after_ms} ms, the tree printed what it prints unpaused"
        );
        assert!(resumed.children().is_empty(), "every child was reaped");
        f.sandbox = resumed;
    }
    Ok(())
}

#[test]
fn a_snapshot_of_a_running_tree_forks_sandboxes_that_each_finish_it() -> Result<()> {
    let mut f = Fixture::new(SandboxLimits::default())?;
    let seen = Seen::default();
    let (_, thread) = f.start(TREE, collecting(&seen))?;
    std::thread::sleep(Duration::from_millis(200));
    let blob = f._tmp.path().join("tree.snapshot");
    f.sandbox
        .snapshot(&blob, &stasis::snapshot::EncodeOptions::default())?;
    let original = joined(thread)?;
    assert_eq!(
        original.exit_code, 0,
        "the snapshotted tree carried on in place"
    );
    let whole = seen_text(&seen);
    for _ in 0..2 {
        let fork_seen = Seen::default();
        let mut fork = f._runtime.resume(&blob, stasis::ResumeOptions::default())?;
        let pid = fork.suspended()[0].pid;
        let out = fork.continue_command(pid, collecting(&fork_seen))?.run();
        assert_eq!(out.exit_code, 0);
        let rest = seen_text(&fork_seen);
        assert!(
            whole.ends_with(&rest) && rest.ends_with("inner done\nouter 0\n"),
            "a fork prints the rest of the run: {rest:?}"
        );
    }
    Ok(())
}

/// A shell whose child reads the shell's own stdin, paused while the child waits for input: the blob,
/// and the pid of the child.
fn paused_reader(f: &mut Fixture) -> Result<(std::path::PathBuf, u32)> {
    let pipe = stasis::wasi::StdinPipe::new(1024);
    let (_, thread) = f.start(
        "procs copy; echo \"status $?\"",
        piped(&pipe, &Seen::default()),
    )?;
    let child = f.first_child()?.pid;
    let blob = f._tmp.path().join(format!("reader-{child}.blob"));
    let report = f.sandbox.pause(&blob)?;
    assert_eq!(report.suspended, 2, "the shell and its child");
    assert!(joined(thread)?.suspended);
    Ok((blob, child))
}

#[test]
fn a_child_reading_its_parents_stdin_reads_the_new_stdin_after_the_resume() -> Result<()> {
    let mut f = Fixture::new(SandboxLimits::default())?;
    let (blob, _) = paused_reader(&mut f)?;
    let mut resumed = f._runtime.resume(&blob, stasis::ResumeOptions::default())?;
    let top = resumed.suspended()[0].pid;
    let (pipe, seen) = (stasis::wasi::StdinPipe::new(1024), Seen::default());
    let command = resumed.continue_command(top, piped(&pipe, &seen))?;
    pipe.write(b"typed after the resume\n")?;
    pipe.close();
    let out = command.run();
    assert_eq!(out.exit_code, 0);
    assert_eq!(seen_text(&seen), "typed after the resume\nstatus 0\n");
    Ok(())
}

#[test]
fn a_suspended_child_killed_before_it_continues_is_its_parents_kill() -> Result<()> {
    let mut f = Fixture::new(SandboxLimits::default())?;
    let (blob, child) = paused_reader(&mut f)?;
    let mut resumed = f._runtime.resume(&blob, stasis::ResumeOptions::default())?;
    assert_eq!(resumed.children()[0].pid, child);
    assert!(resumed.kill_process(child));
    let top = resumed.suspended()[0].pid;
    let seen = Seen::default();
    let out = resumed
        .continue_command(top, piped(&stasis::wasi::StdinPipe::new(16), &seen))?
        .run();
    assert_eq!(out.exit_code, 0);
    assert_eq!(seen_text(&seen), "status 137\n");
    assert!(resumed.children().is_empty());
    Ok(())
}

#[test]
fn bad_requests_to_the_process_imports_get_errnos_and_start_nothing() -> Result<()> {
    let mut f = Fixture::new(SandboxLimits::default())?;
    let (status, out, err) = f.sh("procs bad")?;
    assert_eq!((status, err.as_str()), (0, ""));
    assert_eq!(
        out,
        "not json: 28\nempty argv: 28\nover the bound: 1\nbad out-pointer: 21\n\
         wait for no child: Some(12)\nkill no process: Some(71)\nbad signal: Some(28)\n"
    );
    assert!(
        f.sandbox.children().is_empty(),
        "no request started a process"
    );
    Ok(())
}

/// Pauses a sandbox of the `stateful` reactor and rewrites its blob with `pipes` as its saved pipes and
/// the reactor's fd 0 the read end of pipe 7: what a forged blob could hold (a damaged one fails its
/// checksum first).
fn forged_blob(
    f: &mut Fixture,
    pipes: Vec<stasis::state::PipeSaved>,
) -> Result<std::path::PathBuf> {
    let stateful = f
        ._runtime
        .load_template("stateful", &stasis_guests::bytes(stasis_guests::STATEFUL))?;
    let mut sandbox = f
        ._runtime
        .create_sandbox(&stateful, SandboxOptions::default())?;
    let blob = f._tmp.path().join("honest.blob");
    sandbox.pause(&blob)?;
    let decoded =
        stasis::state::read_sandbox_blob(&blob, &stasis::snapshot::DecodeLimits::default())?;
    let mut manifest = decoded.manifest.clone();
    manifest.kernel.pipes = pipes;
    // The reactor's fd 0 becomes the read end of pipe 7.
    let fd0 = manifest.processes[0]
        .wasi
        .fds
        .iter_mut()
        .find(|fd| fd.fd == 0)
        .ok_or_else(|| anyhow::anyhow!("no fd 0"))?;
    fd0.kind = stasis::wasi::FdKindState::Pipe {
        pipe: 7,
        write: false,
    };
    let bytes: Vec<Vec<u8>> = decoded
        .memories
        .iter()
        .map(|m| {
            let mut data = vec![0u8; usize::try_from(m.byte_len()).unwrap_or(0)];
            for (offset, run) in m.present_runs() {
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                if let Some(slot) = data.get_mut(start..start + run.len()) {
                    slot.copy_from_slice(run);
                }
            }
            data
        })
        .collect();
    let sections: Vec<stasis::snapshot::MemorySection<'_>> = decoded
        .memories
        .iter()
        .zip(&bytes)
        .map(|(m, data)| stasis::snapshot::MemorySection {
            process: m.process(),
            memory: m.memory(),
            data,
        })
        .collect();
    let forged = f._tmp.path().join("forged.blob");
    stasis::snapshot::write_blob_atomic(
        &forged,
        decoded.header.module_sha256,
        &manifest,
        &sections,
        &decoded.filesystem,
        &stasis::snapshot::EncodeOptions::default(),
    )?;
    Ok(forged)
}

#[test]
fn a_blob_whose_pipe_holds_more_than_a_pipe_can_is_refused() -> Result<()> {
    let mut f = Fixture::new(SandboxLimits::default())?;
    let pipe = |len| stasis::state::PipeSaved {
        id: 7,
        bytes: vec![b'x'; len],
    };
    let blob = forged_blob(&mut f, vec![pipe(64 * 1024 + 1)])?;
    let error = f
        ._runtime
        .resume(&blob, stasis::ResumeOptions::default())
        .err()
        .ok_or_else(|| anyhow::anyhow!("the oversized pipe was accepted"))?;
    assert!(
        matches!(
            error,
            stasis::ResumeError::Pipe {
                pipe: 7,
                bytes: 65537
            }
        ),
        "{error:?}"
    );
    // Within the bound, the same blob resumes and the reactor's fd 0 holds the bytes.
    let blob = forged_blob(&mut f, vec![pipe(64 * 1024)])?;
    f._runtime.resume(&blob, stasis::ResumeOptions::default())?;
    Ok(())
}

#[test]
fn a_blob_naming_a_pipe_it_does_not_have_is_refused() -> Result<()> {
    let mut f = Fixture::new(SandboxLimits::default())?;
    let blob = forged_blob(&mut f, Vec::new())?;
    let error = f
        ._runtime
        .resume(&blob, stasis::ResumeOptions::default())
        .err()
        .ok_or_else(|| anyhow::anyhow!("an fd of a missing pipe was accepted"))?;
    let chain = format!("{:?}", anyhow::Error::from(error));
    assert!(chain.contains("end of pipe 7"), "{chain}");
    Ok(())
}
