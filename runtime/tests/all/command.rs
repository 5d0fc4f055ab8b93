//! Commands as processes of their own (`Sandbox::start_command`): output streamed as written, stdin a pipe
//! written while the command runs, stopping from another thread, and what pause and kill do to a running
//! command. No assertion depends on timing: each command waits on its stdin or is stopped explicitly.

use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result};
use stasis::wasi::{OutputSink, Stdin, StdinPipe, StopReason};
use stasis::{CommandIo, Sandbox, SandboxLimits, SandboxOptions, SpawnError, Template};

use crate::common::{assert_contains, runtime, runtime_with_limits};

fn sh(runtime: &stasis::Runtime) -> Result<Template> {
    Ok(runtime.load_template("sh", &stasis_guests::bytes(stasis_guests::SH))?)
}

/// A command line run by `sh -c`, its stdout streamed into the returned channel, its stdin a pipe.
fn start(
    sandbox: &mut Sandbox,
    sh: &Template,
    line: &str,
) -> Result<(stasis::Command, StdinPipe, mpsc::Receiver<Vec<u8>>)> {
    let (tx, rx) = mpsc::channel();
    let pipe = StdinPipe::new(1 << 20);
    let io = CommandIo {
        stdin: Stdin::Pipe(pipe.clone()),
        stdout: OutputSink::stream(1 << 20, move |b| {
            let _ = tx.send(b.to_vec());
        }),
        stderr: OutputSink::capture(1 << 20),
    };
    let command = sandbox.start_command(sh, &["-c".into(), line.into()], &[], io)?;
    Ok((command, pipe, rx))
}

fn recv(rx: &mpsc::Receiver<Vec<u8>>) -> Result<String> {
    let bytes = rx
        .recv_timeout(Duration::from_secs(60))
        .context("no output")?;
    Ok(String::from_utf8(bytes)?)
}

#[test]
fn output_streams_while_the_command_waits_for_stdin() -> Result<()> {
    let (_tmp, runtime) = runtime()?;
    let sh = sh(&runtime)?;
    let mut sandbox = runtime.create_sandbox(&sh, SandboxOptions::default())?;
    let (command, pipe, rx) = start(&mut sandbox, &sh, "echo a; read x; echo got $x; cat")?;
    let control = command.control();
    let thread = std::thread::spawn(move || command.run());
    // `a` arrives while the command still waits for its input: it cannot have ended.
    assert_eq!(recv(&rx)?, "a\n");
    assert!(!control.is_finished());
    pipe.write(b"one\n")?;
    assert_eq!(recv(&rx)?, "got one\n");
    assert!(!control.is_finished());
    pipe.write(b"rest")?;
    pipe.close();
    let output = thread.join().map_err(|_| anyhow::anyhow!("panicked"))?;
    let mut tail = String::new();
    while let Ok(chunk) = rx.try_recv() {
        tail.push_str(&String::from_utf8(chunk)?);
    }
    assert_eq!(tail, "rest");
    assert_eq!((output.exit_code, output.stopped), (0, None));
    assert!(control.is_finished());
    assert_eq!(sandbox.running_commands(), 0);
    Ok(())
}

#[test]
fn a_busy_loop_and_a_sleep_are_stopped_by_signals() -> Result<()> {
    let (_tmp, runtime) = runtime()?;
    let sh = sh(&runtime)?;
    let mut sandbox = runtime.create_sandbox(&sh, SandboxOptions::default())?;
    for (line, reason, code) in [
        ("echo up; while true; do x=1; done", StopReason::Kill, 137),
        ("echo up; sleep 100", StopReason::Terminate, 143),
        ("echo up; cat", StopReason::Kill, 137),
    ] {
        let (command, _pipe, rx) = start(&mut sandbox, &sh, line)?;
        let control = command.control();
        let thread = std::thread::spawn(move || command.run());
        assert_eq!(recv(&rx)?, "up\n");
        assert!(control.stop(reason));
        assert!(!control.stop(StopReason::Kill), "the first reason wins");
        let output = thread.join().map_err(|_| anyhow::anyhow!("panicked"))?;
        assert_eq!(output.exit_code, code, "{line}");
        assert_eq!(output.stopped, Some(reason));
        assert_contains(
            &std::io::Error::other(output.trap.unwrap_or_default()),
            "SIG",
        );
    }
    Ok(())
}

#[test]
fn pausing_ends_commands_that_cannot_be_suspended() -> Result<()> {
    // Without the unwind stage a command's stack cannot be saved: a pause ends it (what
    // `suspend::` tests for modules that can be paused mid-call).
    let tmp = tempfile::tempdir()?;
    let mut config = stasis::RuntimeConfig::new(tmp.path().join("data"));
    config.instrument = stasis::instrument::InstrumentOptions::exports_only();
    let runtime = stasis::Runtime::new(config)?;
    let sh = sh(&runtime)?;
    assert!(!sh.pausability().mid_call());
    let mut sandbox = runtime.create_sandbox(&sh, SandboxOptions::default())?;
    let (command, pipe, rx) = start(&mut sandbox, &sh, "echo partial > /f; echo up; cat")?;
    let thread = std::thread::spawn(move || command.run());
    assert_eq!(recv(&rx)?, "up\n");
    assert_eq!(sandbox.running_commands(), 1);
    let blob = tmp.path().join("s.blob");
    sandbox.pause(&blob)?;
    let output = thread.join().map_err(|_| anyhow::anyhow!("panicked"))?;
    assert_eq!(output.stopped, Some(StopReason::Pause));
    assert_eq!(output.exit_code, 137);
    assert!(!output.suspended);
    assert_contains(
        &std::io::Error::other(output.trap.unwrap_or_default()),
        "paused",
    );
    assert!(pipe.is_closed());
    // What the command wrote before it was ended is in the blob.
    let mut resumed = runtime.resume(&blob, Default::default())?;
    assert!(resumed.suspended().is_empty());
    let out = resumed.run(&sh, &["-c".into(), "cat /f".into()], b"")?;
    assert_eq!(out.stdout, b"partial\n");
    Ok(())
}

#[test]
fn dropping_the_sandbox_ends_its_commands() -> Result<()> {
    let (_tmp, runtime) = runtime()?;
    let sh = sh(&runtime)?;
    let mut sandbox = runtime.create_sandbox(&sh, SandboxOptions::default())?;
    let (command, _pipe, rx) = start(&mut sandbox, &sh, "echo up; sleep 100")?;
    let thread = std::thread::spawn(move || command.run());
    assert_eq!(recv(&rx)?, "up\n");
    drop(sandbox);
    let output = thread.join().map_err(|_| anyhow::anyhow!("panicked"))?;
    assert_eq!(output.stopped, Some(StopReason::SandboxGone));
    Ok(())
}

#[test]
fn running_commands_count_against_the_process_limit() -> Result<()> {
    let (_tmp, runtime) = runtime_with_limits(SandboxLimits {
        max_processes: 1,
        ..SandboxLimits::default()
    })?;
    let sh = sh(&runtime)?;
    let mut sandbox = runtime.create_sandbox(&sh, SandboxOptions::default())?;
    let (first, _pipe, _rx) = start(&mut sandbox, &sh, "cat")?;
    let Err(error) = start(&mut sandbox, &sh, "true") else {
        anyhow::bail!("a second command started past the limit");
    };
    let run_error = error
        .downcast_ref::<stasis::RunError>()
        .context("a RunError")?;
    assert!(matches!(
        run_error,
        stasis::RunError::Spawn(SpawnError::TooManyProcesses(1))
    ));
    // A command dropped without running has ended too.
    drop(first);
    let out = sandbox.run(&sh, &["-c".into(), "echo ok".into()], b"")?;
    assert_eq!(out.stdout, b"ok\n");
    Ok(())
}

#[test]
fn cpu_time_counts_running_wasm_not_sleeping() -> Result<()> {
    let (_tmp, runtime) = runtime_with_limits(SandboxLimits {
        cpu_time_per_call: Duration::from_millis(500),
        ..SandboxLimits::default()
    })?;
    let sh = sh(&runtime)?;
    let mut sandbox = runtime.create_sandbox(&sh, SandboxOptions::default())?;
    let slept = sandbox.run(&sh, &["-c".into(), "sleep 1; echo done".into()], b"")?;
    assert_eq!(
        (slept.exit_code, slept.stdout.as_slice()),
        (0, &b"done\n"[..])
    );
    let spun = sandbox.run(&sh, &["-c".into(), "while true; do x=1; done".into()], b"")?;
    assert_eq!(spun.exit_code, 134);
    assert_contains(
        &std::io::Error::other(spun.trap.unwrap_or_default()),
        "CPU time limit",
    );
    Ok(())
}

#[test]
fn a_paused_sandbox_starts_no_command() -> Result<()> {
    let (tmp, runtime) = runtime()?;
    let sh = sh(&runtime)?;
    let mut sandbox = runtime.create_sandbox(&sh, SandboxOptions::default())?;
    sandbox.pause(&tmp.path().join("p.blob"))?;
    let Err(error) = start(&mut sandbox, &sh, "true") else {
        anyhow::bail!("a paused sandbox started a command");
    };
    assert_contains(error.as_ref(), "paused");
    Ok(())
}
