//! Differential tests of running processes across a pause. For each guest — a `sh` script with loops, a
//! pipeline, command substitution and sleeps; a deep recursion with sleeps and loops (`unwind_deep`); a
//! Python cell; a JavaScript cell — one run is never paused, and others are paused at their N-th unwind
//! point for a dense sample of N (every N up to 12, then a geometric sample to the end), by the unwind
//! stage's countdown, so the point is deterministic. Each blob is resumed in a *fresh OS process* — this
//! test binary run again as the child — and continued to the end; one of them is paused a second time
//! there and resumed again. Stdout and exit code (commands), or the cell's final value and the process's
//! memory hash (reactors), must equal the run never paused. (The WAT programs of `tests/wat`, with
//! `br_table` and multi-value code, are paused at every unwind point by `unwind::`, on fresh instances.)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use stasis::instrument::InstrumentOptions;
use stasis::wasi::{OutputSink, Stdin};
use stasis::{CommandIo, ResumeOptions, Runtime, RuntimeConfig, Sandbox, Template};
use stasis_guest::interpreter::{EXECUTE_HANDLER, ExecuteRequest, ExecuteResponse};

use crate::common::shared_cache_dir;

const JOBS_VAR: &str = "STASIS_DIFFERENTIAL_JOBS";
const REPORT_VAR: &str = "STASIS_DIFFERENTIAL_REPORT";

/// A runtime whose templates have the unwind countdown.
fn runtime() -> Result<(tempfile::TempDir, Runtime)> {
    let dir = tempfile::tempdir()?;
    let mut config = RuntimeConfig::new(dir.path().join("data"));
    config.cache_dir = Some(shared_cache_dir());
    config.instrument = InstrumentOptions {
        countdown: true,
        ..InstrumentOptions::default()
    };
    Ok((dir, Runtime::new(config)?))
}

fn template(runtime: &Runtime, name: &str) -> Result<Template> {
    let path = match name {
        "sh" => stasis_guests::SH,
        "unwind_deep" => stasis_guests::UNWIND_DEEP,
        "python" => stasis_guests::PYTHON,
        "javascript" => stasis_guests::JAVASCRIPT,
        other => bail!("no guest {other}"),
    };
    static LOADING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = LOADING.lock().unwrap_or_else(|e| e.into_inner());
    Ok(runtime.load_template(name, &stasis_guests::bytes(path))?)
}

/// What the child is asked to do with one blob.
#[derive(Debug, Serialize, Deserialize)]
struct Job {
    guest: String,
    blob: PathBuf,
    /// For a cell: the pid of its context, and the code that reads the cell's result.
    context: Option<(u32, String)>,
    /// Pause once more at this unwind point after the resume, and resume again.
    again: Option<u32>,
}

/// What the child found.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Finish {
    /// Stdout after the resume (commands) or the follow-up cell's value (cells).
    output: String,
    /// Exit code (commands); 0 for cells.
    exit_code: i32,
    /// Memory hash of a cell's process afterwards.
    digest: Option<String>,
}

/// The N to pause at: every N up to 12, then ×1.6 steps, without end (the caller stops when a run ends).
fn sample() -> impl Iterator<Item = u32> {
    (1..=12).chain(std::iter::successors(Some(16u32), |n| {
        n.checked_mul(8).map(|x| x / 5)
    }))
}

fn stream_io() -> (CommandIo, mpsc::Receiver<Vec<u8>>) {
    let (tx, rx) = mpsc::channel();
    let io = CommandIo {
        stdin: Stdin::Empty,
        stdout: OutputSink::stream(1 << 20, move |b| {
            let _ = tx.send(b.to_vec());
        }),
        stderr: OutputSink::capture(1 << 20),
    };
    (io, rx)
}

fn collect(rx: &mpsc::Receiver<Vec<u8>>) -> String {
    let mut out = Vec::new();
    while let Ok(chunk) = rx.try_recv() {
        out.extend(chunk);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits until `control`'s process parks (it reached its countdown) or finishes; `true` when parked.
fn parked_or_finished(control: &stasis::Control) -> Result<bool> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if control.is_parked() {
            return Ok(true);
        }
        if control.is_finished() {
            return Ok(false);
        }
        ensure!(
            Instant::now() < deadline,
            "the process neither parked nor finished"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A command case: the guest and its arguments.
struct CommandCase {
    guest: &'static str,
    args: Vec<String>,
}

/// Runs the command once unpaused, then paused at each sampled point; returns the expected output and the
/// jobs (with the output each paused run printed before its pause).
fn command_jobs(case: &CommandCase, dir: &Path) -> Result<(Finish, Vec<(Job, String)>)> {
    let (_tmp, runtime) = runtime()?;
    let program = template(&runtime, case.guest)?;
    let mut sandbox = runtime.create_sandbox(&program, Default::default())?;
    let whole = sandbox.run(&program, &case.args, b"")?;
    let expected = Finish {
        output: String::from_utf8(whole.stdout)?,
        exit_code: whole.exit_code,
        digest: None,
    };
    drop(sandbox);
    let mut jobs = Vec::new();
    for n in sample() {
        let mut sandbox = runtime.create_sandbox(&program, Default::default())?;
        let (io, rx) = stream_io();
        let mut command = sandbox.start_command(&program, &case.args, &[], io)?;
        command.set_unwind_countdown(n)?;
        let control = command.control();
        let thread = std::thread::spawn(move || command.run());
        if !parked_or_finished(&control)? {
            // The run ended before its n-th unwind point: every point has been tried.
            let output = thread.join().map_err(|_| anyhow::anyhow!("panicked"))?;
            ensure!(output.exit_code == expected.exit_code, "{output:?}");
            ensure!(n > 12, "{} has fewer than 12 unwind points", case.guest);
            break;
        }
        let blob = dir.join(format!("{}-{n}.blob", case.guest));
        sandbox.pause(&blob)?;
        let output = thread.join().map_err(|_| anyhow::anyhow!("panicked"))?;
        ensure!(output.suspended, "paused at {n}: {output:?}");
        jobs.push((
            Job {
                guest: case.guest.into(),
                blob,
                context: None,
                again: (n == 5).then_some(9),
            },
            collect(&rx),
        ));
    }
    Ok((expected, jobs))
}

/// Starts a sandbox of `guest` with one context that ran `setup`.
fn cell_sandbox(runtime: &Runtime, guest: &str, setup: &str) -> Result<(Sandbox, u32)> {
    let sh = runtime.load_template("sh", &stasis_guests::bytes(stasis_guests::SH))?;
    let mut sandbox = runtime.create_sandbox(&sh, Default::default())?;
    let interpreter = template(runtime, guest)?;
    let pid = sandbox.spawn(&interpreter)?;
    execute(&mut sandbox, pid, setup)?;
    Ok((sandbox, pid))
}

fn request(code: &str) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(&ExecuteRequest {
        code: code.into(),
        ..ExecuteRequest::default()
    })?)
}

/// Runs a cell to the end; its main result's text.
fn execute(sandbox: &mut Sandbox, pid: u32, code: &str) -> Result<String> {
    let answer = sandbox.call_process(pid, EXECUTE_HANDLER, &request(code)?)?;
    let response: ExecuteResponse = serde_json::from_slice(&answer)?;
    if let Some(error) = response.error {
        bail!("{}: {}", error.name, error.value);
    }
    Ok(response
        .results
        .iter()
        .find(|r| r.is_main_result)
        .map(|r| r.text.clone())
        .unwrap_or_default())
}

/// A cell case: the guest, the setup cell, the cell paused in flight, and the cell reading its effect.
struct CellCase {
    guest: &'static str,
    setup: &'static str,
    cell: &'static str,
    check: &'static str,
    /// Whether two runs never paused from one snapshot end with the same memory, so that the paused runs'
    /// memory must too (boa's heap differs between such runs, so only its values are compared).
    deterministic: bool,
}

fn cell_jobs(case: &CellCase, dir: &Path) -> Result<(Finish, Vec<Job>)> {
    let (_tmp, runtime) = runtime()?;
    // Every run starts from one snapshot taken after the setup, so that what the interpreter drew at its
    // start (hash seeds) is the same in all of them and their memories can be compared.
    let (mut sandbox, pid) = cell_sandbox(&runtime, case.guest, case.setup)?;
    let base = dir.join(format!("{}-base.blob", case.guest));
    sandbox.snapshot(&base, &Default::default())?;
    drop(sandbox);
    let mut sandbox = runtime.resume(&base, ResumeOptions::default())?;
    execute(&mut sandbox, pid, case.cell)?;
    let expected = Finish {
        output: execute(&mut sandbox, pid, case.check)?,
        exit_code: 0,
        digest: sandbox.memory_digest(pid).map(hex::encode),
    };
    drop(sandbox);
    let mut jobs = Vec::new();
    for n in sample() {
        let mut sandbox = runtime.resume(&base, ResumeOptions::default())?;
        let mut call = sandbox.start_call(pid, EXECUTE_HANDLER, &request(case.cell)?)?;
        call.set_unwind_countdown(n)?;
        let control = call.control();
        let thread = std::thread::spawn(move || call.run());
        if !parked_or_finished(&control)? {
            let output = thread.join().map_err(|_| anyhow::anyhow!("panicked"))?;
            output.result?;
            ensure!(
                n > 12,
                "the {} cell has fewer than 12 unwind points",
                case.guest
            );
            break;
        }
        let blob = dir.join(format!("{}-{n}.blob", case.guest));
        sandbox.pause(&blob)?;
        let output = thread.join().map_err(|_| anyhow::anyhow!("panicked"))?;
        ensure!(
            matches!(output.result, Err(stasis::CallError::Suspended)),
            "paused at {n}: {:?}",
            output.result
        );
        jobs.push(Job {
            guest: case.guest.into(),
            blob,
            context: Some((pid, case.check.into())),
            again: (n == 5).then_some(7),
        });
    }
    Ok((expected, jobs))
}

/// Runs the child on `jobs` and returns what it found for each.
fn in_a_fresh_process(dir: &Path, jobs: &[Job]) -> Result<Vec<Finish>> {
    let job_file = dir.join("jobs.json");
    std::fs::write(&job_file, serde_json::to_vec(jobs)?)?;
    let report = dir.join("report.json");
    let status = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "differential::child_finishes_paused_runs",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(JOBS_VAR, &job_file)
        .env(REPORT_VAR, &report)
        .status()?;
    ensure!(status.success(), "the child process failed: {status}");
    Ok(serde_json::from_slice(&std::fs::read(report)?)?)
}

/// The child half of the tests below; does nothing when run by the ordinary test harness.
#[test]
fn child_finishes_paused_runs() -> Result<()> {
    let (Some(jobs), Some(report)) = (std::env::var_os(JOBS_VAR), std::env::var_os(REPORT_VAR))
    else {
        return Ok(());
    };
    let jobs: Vec<Job> = serde_json::from_slice(&std::fs::read(jobs)?)?;
    let mut found = Vec::new();
    for job in &jobs {
        found.push(finish(job).with_context(|| format!("finishing {}", job.blob.display()))?);
    }
    std::fs::write(report, serde_json::to_vec(&found)?)?;
    Ok(())
}

/// Resumes a job's blob in a runtime of this process and runs it to the end.
fn finish(job: &Job) -> Result<Finish> {
    let (_tmp, runtime) = runtime()?;
    template(&runtime, &job.guest)?;
    if job.context.is_some() {
        template(&runtime, "sh")?;
    }
    let mut sandbox = runtime.resume(&job.blob, ResumeOptions::default())?;
    let mut printed = String::new();
    let mut again = job.again;
    loop {
        match &job.context {
            None => {
                let pid = sandbox
                    .suspended()
                    .first()
                    .map(|p| p.pid)
                    .context("the command is suspended")?;
                let (io, rx) = stream_io();
                let mut command = sandbox.continue_command(pid, io)?;
                if let Some(n) = again.take() {
                    command.set_unwind_countdown(n)?;
                    let control = command.control();
                    let thread = std::thread::spawn(move || command.run());
                    if parked_or_finished(&control)? {
                        // Paused a second time, and resumed again by a runtime of its own.
                        let blob = job.blob.with_extension("again");
                        sandbox.pause(&blob)?;
                        ensure!(
                            thread
                                .join()
                                .map_err(|_| anyhow::anyhow!("panicked"))?
                                .suspended
                        );
                        printed.push_str(&collect(&rx));
                        sandbox = runtime.resume(&blob, ResumeOptions::default())?;
                        continue;
                    }
                    let output = thread.join().map_err(|_| anyhow::anyhow!("panicked"))?;
                    printed.push_str(&collect(&rx));
                    return Ok(Finish {
                        output: printed,
                        exit_code: output.exit_code,
                        digest: None,
                    });
                }
                let output = command.run();
                printed.push_str(&collect(&rx));
                return Ok(Finish {
                    output: printed,
                    exit_code: output.exit_code,
                    digest: None,
                });
            }
            Some((pid, check)) => {
                let mut call = sandbox.continue_call(*pid)?;
                if let Some(n) = again.take() {
                    call.set_unwind_countdown(n)?;
                    let control = call.control();
                    let thread = std::thread::spawn(move || call.run());
                    if parked_or_finished(&control)? {
                        let blob = job.blob.with_extension("again");
                        sandbox.pause(&blob)?;
                        let output = thread.join().map_err(|_| anyhow::anyhow!("panicked"))?;
                        ensure!(matches!(output.result, Err(stasis::CallError::Suspended)));
                        sandbox = runtime.resume(&blob, ResumeOptions::default())?;
                        continue;
                    }
                    thread.join().map_err(|_| anyhow::anyhow!("panicked"))?;
                } else {
                    call.run();
                }
                let output = execute(&mut sandbox, *pid, check)?;
                return Ok(Finish {
                    output,
                    exit_code: 0,
                    digest: sandbox.memory_digest(*pid).map(hex::encode),
                });
            }
        }
    }
}

fn check_commands(case: CommandCase) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (expected, jobs) = command_jobs(&case, dir.path())?;
    ensure!(jobs.len() > 12, "{} jobs only", jobs.len());
    let (jobs, before): (Vec<Job>, Vec<String>) = jobs.into_iter().unzip();
    let found = in_a_fresh_process(dir.path(), &jobs)?;
    for ((job, before), found) in jobs.iter().zip(before).zip(found) {
        assert_eq!(
            (format!("{before}{}", found.output), found.exit_code),
            (expected.output.clone(), expected.exit_code),
            "{}",
            job.blob.display()
        );
    }
    Ok(())
}

fn check_cells(case: CellCase) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (expected, jobs) = cell_jobs(&case, dir.path())?;
    ensure!(jobs.len() > 12, "{} jobs only", jobs.len());
    let found = in_a_fresh_process(dir.path(), &jobs)?;
    for (job, mut found) in jobs.iter().zip(found) {
        if !case.deterministic {
            found.digest = expected.digest.clone();
        }
        assert_eq!(found, expected, "{}", job.blob.display());
    }
    Ok(())
}

#[test]
fn a_shell_script_with_loops_pipes_and_sleeps() -> Result<()> {
    let script = "for i in 3 1 2; do echo line$i; done | sort | head -2; \
                  i=0; while [ $i -lt 40 ]; do i=$((i+1)); \
                  if [ $((i % 10)) -eq 0 ]; then sleep 0.01; echo tick $i; fi; done; \
                  echo $(echo nested | tr a-z A-Z); echo done > /tmp/out; cat /tmp/out; exit 3";
    check_commands(CommandCase {
        guest: "sh",
        args: vec!["-c".into(), script.into()],
    })
}

#[test]
fn a_deep_recursion_with_sleeps_and_loops() -> Result<()> {
    check_commands(CommandCase {
        guest: "unwind_deep",
        args: vec!["3000".into()],
    })
}

#[test]
fn a_python_cell() -> Result<()> {
    check_cells(CellCase {
        guest: "python",
        setup: "acc = 7\nseen = []",
        cell: "for i in range(60):\n    acc = (acc * 31 + i) % 1000003\n    if i % 20 == 0:\n        seen.append(acc)\n",
        check: "(acc, seen)",
        deterministic: true,
    })
}

#[test]
fn a_javascript_cell() -> Result<()> {
    check_cells(CellCase {
        guest: "javascript",
        setup: "var acc = 7; var seen = [];",
        cell: "for (let i = 0; i < 60; i++) { acc = (acc * 31 + i) % 1000003; if (i % 20 == 0) seen.push(acc); }",
        check: "JSON.stringify([acc, seen])",
        deterministic: false,
    })
}
