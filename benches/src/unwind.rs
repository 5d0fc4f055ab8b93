//! What the unwind stage costs and what it buys: for each shipped guest, the module's size and a CPU-bound
//! workload's time with the stage against without it (the same runtime, the export-only instrumentation as
//! the reference, samples interleaved so that a noisy machine affects both alike); then the time from a
//! pause request to a durable blob with a command running against an idle sandbox, and the time from a
//! resume to the first output of the command it suspended.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use serde_json::json;
use stasis::instrument::{InstrumentOptions, instrument_with};
use stasis::wasi::{OutputSink, Stdin};
use stasis::{CommandIo, ResumeOptions, Runtime, RuntimeConfig, SandboxOptions, Template};

use crate::scenarios::Bench;
use crate::stats::{Measurement, ms};

/// A guest and its CPU-bound workload.
struct Workload {
    guest: &'static str,
    path: &'static str,
    /// A shell command line, or a cell.
    code: &'static str,
}

const SH: Workload = Workload {
    guest: "sh",
    path: stasis_guests::SH,
    code: "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo $i",
};
const PYTHON: Workload = Workload {
    guest: "python",
    path: stasis_guests::PYTHON,
    code: "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\nsum(fib(18) for _ in range(3)) + sum(i * i for i in range(20000))",
};
const JAVASCRIPT: Workload = Workload {
    guest: "javascript",
    path: stasis_guests::JAVASCRIPT,
    code: "function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2) } let s = 0; for (let i = 0; i < 20000; i++) { s += i * i } fib(20) + s",
};

/// A runtime instrumenting with `options`, its data (and compiled modules) under the bench's work dir.
fn runtime(bench: &Bench, name: &str, options: InstrumentOptions) -> Result<Runtime> {
    let mut config = RuntimeConfig::new(bench.work.join(name));
    config.instrument = options;
    Ok(Runtime::new(config)?)
}

/// Runs the workload once in a fresh process of `template` (a command, or a cell in a new context) and
/// returns how long the work itself took.
fn run_once(runtime: &Runtime, sh: &Template, template: &Template, work: &Workload) -> Result<f64> {
    let mut sandbox = runtime.create_sandbox(sh, SandboxOptions::default())?;
    if work.guest == "sh" {
        let started = Instant::now();
        let output = sandbox.run(template, &["-c".into(), work.code.into()], b"")?;
        let took = ms(started.elapsed());
        ensure!(output.exit_code == 0, "{output:?}");
        return Ok(took);
    }
    let pid = sandbox.spawn(template)?;
    let cell = |code: &str| serde_json::to_vec(&json!({ "code": code, "env_vars": {} }));
    sandbox.call_process(pid, "execute", &cell("1")?)?;
    let started = Instant::now();
    let answer = sandbox.call_process(pid, "execute", &cell(work.code)?)?;
    let took = ms(started.elapsed());
    let answer: serde_json::Value = serde_json::from_slice(&answer)?;
    ensure!(answer["error"].is_null(), "{answer}");
    Ok(took)
}

/// Module size and workload time of each guest with and without the unwind stage.
pub fn overhead(bench: &Bench, quick: bool) -> Result<Vec<Measurement>> {
    let plain = runtime(bench, "unwind-plain", InstrumentOptions::exports_only())?;
    let rewritten = runtime(bench, "unwind-rewritten", InstrumentOptions::default())?;
    // Quick runs (CI) leave out the interpreters: each would be instrumented and compiled twice.
    let guests: &[Workload] = if quick {
        &[SH]
    } else {
        &[SH, PYTHON, JAVASCRIPT]
    };
    let mut out = Vec::new();
    for work in guests {
        let wasm = stasis_guests::bytes(work.path);
        let params = json!({ "guest": work.guest });
        let sizes: Vec<usize> = [
            InstrumentOptions::exports_only(),
            InstrumentOptions::default(),
        ]
        .iter()
        .map(|o| instrument_with(&wasm, o).map(|i| i.wasm.len()))
        .collect::<Result<_, _>>()?;
        out.push(
            Measurement::new(
                "instrumented module size",
                params.clone(),
                "MiB",
                vec![sizes[1] as f64 / (1 << 20) as f64],
            )
            .against(
                "without the unwind stage",
                sizes[0] as f64 / (1 << 20) as f64,
            ),
        );
        let mut times = [Vec::new(), Vec::new()];
        let loaded = [
            (
                plain.load_template(work.guest, &wasm)?,
                plain.load_template("sh", &stasis_guests::bytes(stasis_guests::SH))?,
            ),
            (
                rewritten.load_template(work.guest, &wasm)?,
                rewritten.load_template("sh", &stasis_guests::bytes(stasis_guests::SH))?,
            ),
        ];
        let runtimes = [&plain, &rewritten];
        // A warm-up of each, then interleaved samples.
        for (i, (template, sh)) in loaded.iter().enumerate() {
            run_once(runtimes[i], sh, template, work)?;
        }
        for _ in 0..bench.repeats.max(5) {
            for (i, (template, sh)) in loaded.iter().enumerate() {
                times[i].push(run_once(runtimes[i], sh, template, work)?);
            }
        }
        let reference = Measurement::new("", json!({}), "ms", times[0].clone()).median;
        out.push(
            Measurement::new(
                "CPU-bound workload, unwind stage",
                json!({ "guest": work.guest, "workload": work.code }),
                "ms",
                std::mem::take(&mut times[1]),
            )
            .against("without the unwind stage", reference),
        );
    }
    Ok(out)
}

/// Pause latency with a command running against an idle sandbox, and resume to the command's first output.
pub fn suspended_command(bench: &Bench) -> Result<Vec<Measurement>> {
    let runtime = &bench.runtime;
    let sh = runtime.load_template("sh", &stasis_guests::bytes(stasis_guests::SH))?;
    let (mut idle, mut busy, mut first_output) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..bench.repeats.max(5) {
        let blob = bench.work.join(format!("suspend-{i}.blob"));
        let mut sandbox = runtime.create_sandbox(&sh, SandboxOptions::default())?;
        let started = Instant::now();
        sandbox.pause(&blob)?;
        idle.push(ms(started.elapsed()));

        let mut sandbox = runtime.create_sandbox(&sh, SandboxOptions::default())?;
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let io = CommandIo {
            stdin: Stdin::Empty,
            stdout: OutputSink::stream(1 << 20, move |b| {
                let _ = tx.send(b.to_vec());
            }),
            stderr: OutputSink::capture(1 << 20),
        };
        // Output every few iterations (≈ 0.3 ms of the loop), so the first output after the resume measures the
        // resume, not the loop.
        let line = "echo up; i=0; while true; do i=$((i+1)); if [ $((i % 8)) -eq 0 ]; then echo $i; fi; done";
        let command = sandbox.start_command(&sh, &["-c".into(), line.into()], &[], io)?;
        let thread = std::thread::spawn(move || command.run());
        rx.recv_timeout(Duration::from_secs(60))
            .context("no output")?;
        let started = Instant::now();
        let report = sandbox.pause(&blob)?;
        busy.push(ms(started.elapsed()));
        ensure!(report.suspended == 1, "the command was not suspended");
        ensure!(
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("panicked"))?
                .suspended
        );
        drop(sandbox);

        let started = Instant::now();
        let mut resumed = runtime.resume(&blob, ResumeOptions::default())?;
        let pid = resumed
            .suspended()
            .first()
            .map(|p| p.pid)
            .context("suspended")?;
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let io = CommandIo {
            stdin: Stdin::Empty,
            stdout: OutputSink::stream(1 << 20, move |b| {
                let _ = tx.send(b.to_vec());
            }),
            stderr: OutputSink::capture(1 << 20),
        };
        let command = resumed.continue_command(pid, io)?;
        let control = command.control();
        let thread = std::thread::spawn(move || command.run());
        rx.recv_timeout(Duration::from_secs(60))
            .context("no output after the resume")?;
        first_output.push(ms(started.elapsed()));
        control.stop(stasis::wasi::StopReason::Kill);
        thread.join().map_err(|_| anyhow::anyhow!("panicked"))?;
        std::fs::remove_file(&blob)?;
    }
    let idle_median = Measurement::new("", json!({}), "ms", idle.clone()).median;
    Ok(vec![
        Measurement::new("pause, idle sandbox", json!({ "guest": "sh" }), "ms", idle),
        Measurement::new(
            "pause, command running (suspended)",
            json!({ "guest": "sh", "command": "a CPU-bound loop" }),
            "ms",
            busy,
        )
        .against("idle sandbox", idle_median),
        Measurement::new(
            "resume to first output of a suspended command",
            json!({ "guest": "sh" }),
            "ms",
            first_output,
        ),
    ])
}
