//! Running processes across a pause: a command in the middle of a sleep, a loop or a read of its stdin, and
//! a handler call in flight, are suspended by `Sandbox::pause`, saved in the blob, and continue after the
//! resume exactly where they were; a snapshot suspends and rewinds them in place, and every sandbox resumed
//! from it continues them on its own.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use stasis::wasi::{OutputSink, Stdin, StdinPipe};
use stasis::{CommandIo, ProcessKind, ProcessStatus, Sandbox, SandboxOptions, Template};

use crate::common::runtime;

fn sh(runtime: &stasis::Runtime) -> Result<Template> {
    Ok(runtime.load_template("sh", &stasis_guests::bytes(stasis_guests::SH))?)
}

/// Streams of a command: stdout into a channel, stdin a pipe.
fn io() -> (CommandIo, StdinPipe, mpsc::Receiver<Vec<u8>>) {
    let (tx, rx) = mpsc::channel();
    let pipe = StdinPipe::new(1 << 20);
    let io = CommandIo {
        stdin: Stdin::Pipe(pipe.clone()),
        stdout: OutputSink::stream(1 << 20, move |b| {
            let _ = tx.send(b.to_vec());
        }),
        stderr: OutputSink::capture(1 << 20),
    };
    (io, pipe, rx)
}

/// Everything received on `rx` until the channel closes (the command ended) or a minute passes.
fn drain(rx: &mpsc::Receiver<Vec<u8>>) -> Result<String> {
    let mut all = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => all.extend_from_slice(&chunk),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => bail!("the command did not end"),
        }
    }
    Ok(String::from_utf8(all)?)
}

/// Waits until `rx` has delivered `marker` (what the command prints when it is where the test wants it).
fn wait_for(rx: &mpsc::Receiver<Vec<u8>>, marker: &str) -> Result<String> {
    let mut seen = String::new();
    while !seen.contains(marker) {
        let chunk = rx
            .recv_timeout(Duration::from_secs(60))
            .with_context(|| format!("no {marker:?} (so far: {seen:?})"))?;
        seen.push_str(&String::from_utf8(chunk)?);
    }
    Ok(seen)
}

/// A command running on a thread of the test's.
struct Running {
    pid: u32,
    rx: mpsc::Receiver<Vec<u8>>,
    pipe: StdinPipe,
    thread: std::thread::JoinHandle<stasis::CommandOutput>,
}

/// Starts `line` in `sh -c` on a thread.
fn spawn_line(sandbox: &mut Sandbox, sh: &Template, line: &str, label: &str) -> Result<Running> {
    let (io, pipe, rx) = io();
    let command = sandbox.start_command_labeled(sh, &["-c".into(), line.into()], &[], io, label)?;
    Ok(Running {
        pid: command.control().pid(),
        rx,
        pipe,
        thread: std::thread::spawn(move || command.run()),
    })
}

/// Continues the one suspended command of `sandbox` on a thread.
fn continue_only(sandbox: &mut Sandbox) -> Result<Running> {
    let suspended = sandbox.suspended();
    let [info] = suspended.as_slice() else {
        bail!("expected one suspended process, found {suspended:?}");
    };
    ensure!(info.kind == ProcessKind::Command);
    let pid = info.pid;
    let (io, pipe, rx) = io();
    let command = sandbox.continue_command(pid, io)?;
    Ok(Running {
        pid,
        rx,
        pipe,
        thread: std::thread::spawn(move || command.run()),
    })
}

fn join(thread: std::thread::JoinHandle<stasis::CommandOutput>) -> Result<stasis::CommandOutput> {
    thread
        .join()
        .map_err(|_| anyhow::anyhow!("the command's thread panicked"))
}

#[test]
fn a_sleeping_command_is_suspended_and_sleeps_only_what_is_left() -> Result<()> {
    let (tmp, runtime) = runtime()?;
    let sh = sh(&runtime)?;
    assert!(sh.pausability().mid_call(), "{}", sh.pausability());
    let mut sandbox = runtime.create_sandbox(&sh, SandboxOptions::default())?;
    let Running {
        pid, rx, thread, ..
    } = spawn_line(
        &mut sandbox,
        &sh,
        "echo before > /s; echo up; sleep 2; echo after >> /s; echo done",
        "the sleeper",
    )?;
    wait_for(&rx, "up")?;
    let sleep_started = Instant::now();
    std::thread::sleep(Duration::from_millis(800));
    let blob = tmp.path().join("sleep.blob");
    let report = sandbox.pause(&blob)?;
    let slept_before = sleep_started.elapsed();
    assert_eq!(report.suspended, 1);
    let output = join(thread)?;
    assert!(output.suspended, "{output:?}");
    drop(sandbox);
    // Paused time does not count: wait a while, then resume.
    std::thread::sleep(Duration::from_millis(500));
    let mut resumed = runtime.resume(&blob, Default::default())?;
    let listed = resumed.suspended();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].label, "the sleeper");
    assert_eq!(listed[0].status, ProcessStatus::Suspended);
    let resumed_at = Instant::now();
    let continued = continue_only(&mut resumed)?;
    assert_eq!(continued.pid, pid, "the command keeps its pid");
    let Running { rx, thread, .. } = continued;
    let output = join(thread)?;
    assert_eq!(
        (output.exit_code, output.suspended),
        (0, false),
        "{output:?}"
    );
    assert_eq!(drain(&rx)?, "done\n");
    // The sleep had 2 s; only what was left of it is slept after the resume.
    let slept_after = resumed_at.elapsed();
    let left = Duration::from_secs(2).saturating_sub(slept_before);
    ensure!(
        slept_after + Duration::from_millis(300) >= left
            && slept_after <= left + Duration::from_millis(500),
        "{slept_before:?} slept before the pause, {slept_after:?} after it"
    );
    assert_eq!(
        std::fs::read_to_string(resumed.dir().join("s"))?,
        "before\nafter\n"
    );
    assert!(resumed.processes().is_empty());
    Ok(())
}

#[test]
fn a_cpu_bound_loop_is_suspended_mid_loop_and_finishes_the_count() -> Result<()> {
    let (tmp, runtime) = runtime()?;
    let sh = sh(&runtime)?;
    let mut sandbox = runtime.create_sandbox(&sh, SandboxOptions::default())?;
    let Running { rx, thread, .. } = spawn_line(
        &mut sandbox,
        &sh,
        "echo up; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo count=$i",
        "",
    )?;
    wait_for(&rx, "up")?;
    let blob = tmp.path().join("loop.blob");
    let report = sandbox.pause(&blob)?;
    assert_eq!(report.suspended, 1, "the loop was still running");
    assert!(join(thread)?.suspended);
    drop(sandbox);
    let mut resumed = runtime.resume(&blob, Default::default())?;
    let Running { rx, thread, .. } = continue_only(&mut resumed)?;
    let output = join(thread)?;
    assert_eq!(output.exit_code, 0, "{output:?}");
    assert_eq!(drain(&rx)?, "count=20000\n");
    Ok(())
}

#[test]
fn unread_stdin_survives_the_pause_and_a_closed_pipe_stays_closed() -> Result<()> {
    let (tmp, runtime) = runtime()?;
    let sh = sh(&runtime)?;
    let mut sandbox = runtime.create_sandbox(&sh, SandboxOptions::default())?;
    let Running {
        rx, pipe, thread, ..
    } = spawn_line(&mut sandbox, &sh, "echo up; sleep 1; cat", "")?;
    wait_for(&rx, "up")?;
    pipe.write(b"written before the pause,")?;
    pipe.close();
    let blob = tmp.path().join("stdin.blob");
    sandbox.pause(&blob)?;
    assert!(join(thread)?.suspended);
    drop(sandbox);
    let mut resumed = runtime.resume(&blob, Default::default())?;
    let Running {
        rx, pipe, thread, ..
    } = continue_only(&mut resumed)?;
    assert!(pipe.is_closed(), "the old pipe was closed");
    let output = join(thread)?;
    assert_eq!(output.exit_code, 0);
    assert_eq!(drain(&rx)?, "written before the pause,");
    Ok(())
}

#[test]
fn a_command_blocked_on_stdin_is_suspended_and_reads_after_the_resume() -> Result<()> {
    let (tmp, runtime) = runtime()?;
    let sh = sh(&runtime)?;
    let mut sandbox = runtime.create_sandbox(&sh, SandboxOptions::default())?;
    let Running {
        rx, pipe, thread, ..
    } = spawn_line(
        &mut sandbox,
        &sh,
        "read x; echo got $x; read y; echo got $y",
        "",
    )?;
    pipe.write(b"one\n")?;
    wait_for(&rx, "got one")?;
    // Now it waits for the second line, in `fd_read`.
    let blob = tmp.path().join("read.blob");
    assert_eq!(sandbox.pause(&blob)?.suspended, 1);
    assert!(join(thread)?.suspended);
    drop(sandbox);
    let mut resumed = runtime.resume(&blob, Default::default())?;
    let Running {
        rx, pipe, thread, ..
    } = continue_only(&mut resumed)?;
    pipe.write(b"two\n")?;
    let output = join(thread)?;
    assert_eq!(output.exit_code, 0);
    assert_eq!(drain(&rx)?, "got two\n");
    Ok(())
}

#[test]
fn a_snapshot_keeps_the_command_running_and_every_fork_continues_it() -> Result<()> {
    let (tmp, runtime) = runtime()?;
    let sh = sh(&runtime)?;
    let mut sandbox = runtime.create_sandbox(&sh, SandboxOptions::default())?;
    let Running { rx, thread, .. } = spawn_line(
        &mut sandbox,
        &sh,
        "echo up; i=0; while [ $i -lt 5 ]; do i=$((i+1)); echo tick $i >> /ticks; sleep 0.2; done; echo end",
        "ticker",
    )?;
    wait_for(&rx, "up")?;
    let blob = tmp.path().join("snap.blob");
    assert_eq!(sandbox.snapshot(&blob, &Default::default())?.suspended, 1);
    // The source carries on as if nothing happened.
    let output = join(thread)?;
    assert_eq!((output.exit_code, output.suspended), (0, false));
    assert_eq!(drain(&rx)?, "end\n");
    assert_eq!(
        std::fs::read_to_string(sandbox.dir().join("ticks"))?
            .lines()
            .count(),
        5
    );
    // Two forks from the snapshot each finish the loop on their own.
    for _ in 0..2 {
        let mut fork = runtime.resume(&blob, Default::default())?;
        let Running { rx, thread, .. } = continue_only(&mut fork)?;
        assert_eq!(join(thread)?.exit_code, 0);
        assert_eq!(drain(&rx)?, "end\n");
        let ticks = std::fs::read_to_string(fork.dir().join("ticks"))?;
        let expected: String = (1..=5).map(|i| format!("tick {i}\n")).collect();
        assert_eq!(ticks, expected);
    }
    Ok(())
}

#[test]
fn several_pauses_in_one_run() -> Result<()> {
    let (tmp, runtime) = runtime()?;
    let sh = sh(&runtime)?;
    let mut sandbox = runtime.create_sandbox(&sh, SandboxOptions::default())?;
    let Running {
        mut rx, mut thread, ..
    } = spawn_line(
        &mut sandbox,
        &sh,
        "i=0; while [ $i -lt 6 ]; do i=$((i+1)); echo n$i; sleep 0.1; done",
        "",
    )?;
    let mut seen = wait_for(&rx, "n1")?;
    for round in 0..3 {
        let blob = tmp.path().join(format!("round{round}.blob"));
        sandbox.pause(&blob)?;
        assert!(join(thread)?.suspended, "round {round}");
        while let Ok(chunk) = rx.try_recv() {
            seen.push_str(&String::from_utf8(chunk)?);
        }
        drop(sandbox);
        sandbox = runtime.resume(&blob, Default::default())?;
        let next = continue_only(&mut sandbox)?;
        rx = next.rx;
        thread = next.thread;
        if round < 2 {
            // Let it print something before the next pause.
            let more = rx
                .recv_timeout(Duration::from_secs(60))
                .context("no output after a resume")?;
            seen.push_str(&String::from_utf8(more)?);
        }
    }
    assert_eq!(join(thread)?.exit_code, 0);
    seen.push_str(&drain(&rx)?);
    assert_eq!(seen, "n1\nn2\nn3\nn4\nn5\nn6\n");
    Ok(())
}
