//! The benchmark scenarios. Each creates what it measures from scratch, repeats it, and returns
//! [`Measurement`]s with the same-run reference figure each is compared with.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, Result};
use serde_json::json;
use stasis::{ResumeOptions, Runtime, RuntimeConfig, Sandbox, SandboxOptions, Template};

use crate::reference;
use crate::stats::{Measurement, ms};

/// What every scenario shares: the runtime, the guest template, a scratch directory and the run's size.
pub struct Bench {
    /// The runtime, with its module cache warm.
    pub runtime: Runtime,
    /// The `stateful` reactor guest.
    pub template: Template,
    /// Scratch directory for blobs and data.
    pub work: std::path::PathBuf,
    /// How many times each figure is sampled.
    pub repeats: usize,
}

impl Bench {
    /// A bench working in `work`.
    pub fn new(work: &Path, repeats: usize) -> Result<Self> {
        let runtime = Runtime::new(RuntimeConfig::new(work.join("data")))?;
        let template =
            runtime.load_template("stateful", &stasis_guests::bytes(stasis_guests::STATEFUL))?;
        Ok(Self {
            runtime,
            template,
            work: work.to_owned(),
            repeats,
        })
    }

    fn sandbox_with(&self, mib: usize, contents: &str) -> Result<Sandbox> {
        let mut sandbox = self
            .runtime
            .create_sandbox(&self.template, SandboxOptions::default())?;
        if mib > 0 {
            sandbox.call("fill", format!("{mib} 1 {contents}").as_bytes())?;
        }
        Ok(sandbox)
    }
}

/// Pause and resume (until the first guest call returns) of a guest that touched `mib` MiB.
pub fn pause_resume(bench: &Bench, mib: usize, contents: &str) -> Result<Vec<Measurement>> {
    let mut sandbox = bench.sandbox_with(mib, contents)?;
    let (mut pauses, mut resumes, mut blob_mib) = (Vec::new(), Vec::new(), Vec::new());
    let mut memory_bytes = 0;
    for i in 0..bench.repeats {
        let blob = bench.work.join(format!("pause-{mib}-{contents}-{i}.blob"));
        let started = Instant::now();
        let report = sandbox.pause(&blob)?;
        pauses.push(ms(started.elapsed()));
        memory_bytes = report.memory_bytes as usize;
        blob_mib.push(report.blob_bytes as f64 / (1 << 20) as f64);
        let started = Instant::now();
        sandbox = bench.runtime.resume(&blob, ResumeOptions::default())?;
        sandbox.call("bump", b"")?;
        resumes.push(ms(started.elapsed()));
        std::fs::remove_file(&blob)?;
    }
    let fsync = median(
        (0..3)
            .map(|_| reference::fsync_write_ms(&bench.work, memory_bytes))
            .collect::<Result<_>>()?,
    );
    let memcpy = median((0..3).map(|_| reference::memcpy_ms(memory_bytes)).collect());
    let params = json!({ "mib": mib, "contents": contents, "memory_bytes": memory_bytes });
    Ok(vec![
        Measurement::new("pause", params.clone(), "ms", pauses)
            .against("fsync write of the memory", fsync),
        Measurement::new("resume", params.clone(), "ms", resumes)
            .against("memcpy of the memory", memcpy),
        Measurement::new("blob size", params, "MiB", blob_mib),
    ])
}

/// Pause after the guest dirtied 1 MiB of a large memory, following a previous pause and resume.
pub fn incremental(bench: &Bench, mib: usize) -> Result<Vec<Measurement>> {
    let mut sandbox = bench.sandbox_with(mib, "random")?;
    let first = bench.work.join("incremental-first.blob");
    sandbox.pause(&first)?;
    sandbox = bench.runtime.resume(&first, ResumeOptions::default())?;
    let mut samples = Vec::new();
    let mut full = Vec::new();
    for i in 0..bench.repeats {
        sandbox.call("dirty", format!("1 {}", i + 2).as_bytes())?;
        let blob = bench.work.join(format!("incremental-{i}.blob"));
        let started = Instant::now();
        sandbox.pause(&blob)?;
        samples.push(ms(started.elapsed()));
        sandbox = bench.runtime.resume(&blob, ResumeOptions::default())?;
        std::fs::remove_file(&blob)?;
        // The same pause without a prior dirtying, for the ratio: what a truly incremental pause saves.
        let blob = bench.work.join(format!("incremental-full-{i}.blob"));
        let started = Instant::now();
        sandbox.pause(&blob)?;
        full.push(ms(started.elapsed()));
        sandbox = bench.runtime.resume(&blob, ResumeOptions::default())?;
        std::fs::remove_file(&blob)?;
    }
    std::fs::remove_file(&first)?;
    let one_mib_fsync = median(
        (0..3)
            .map(|_| reference::fsync_write_ms(&bench.work, 1 << 20))
            .collect::<Result<_>>()?,
    );
    let params = json!({ "mib": mib, "dirty_mib": 1 });
    Ok(vec![
        Measurement::new("incremental pause", params.clone(), "ms", samples)
            .against("fsync write of 1 MiB", one_mib_fsync),
        Measurement::new(
            "incremental pause (full for comparison)",
            params,
            "ms",
            full,
        ),
    ])
}

/// `count` sandboxes resumed from one snapshot of a `mib` MiB guest: total time and resident memory.
pub fn fork(bench: &Bench, mib: usize, count: usize) -> Result<Vec<Measurement>> {
    let mut source = bench.sandbox_with(mib, "random")?;
    let blob = bench.work.join("fork.blob");
    source.snapshot(&blob, &Default::default())?;
    drop(source);
    let mut totals = Vec::new();
    let mut rss_per_fork = Vec::new();
    for _ in 0..bench.repeats.min(3) {
        let rss_before = resident_bytes();
        let started = Instant::now();
        let mut forks = Vec::with_capacity(count);
        for _ in 0..count {
            let mut fork = bench.runtime.resume(&blob, ResumeOptions::default())?;
            fork.call("bump", b"")?;
            forks.push(fork);
        }
        totals.push(ms(started.elapsed()));
        rss_per_fork.push(
            resident_bytes().saturating_sub(rss_before) as f64 / count as f64 / (1 << 20) as f64,
        );
        drop(forks);
    }
    std::fs::remove_file(&blob)?;
    let params = json!({ "mib": mib, "count": count });
    Ok(vec![
        Measurement::new("fork total", params.clone(), "ms", totals),
        Measurement::new(
            "fork resident memory per sandbox",
            params,
            "MiB",
            rss_per_fork,
        ),
    ])
}

/// Creating a sandbox from a cached template, against the first create of a template (compile included)
/// and against instantiating an empty module.
pub fn create(bench: &Bench) -> Result<Vec<Measurement>> {
    let mut cached = Vec::new();
    for _ in 0..bench.repeats.max(5) {
        let started = Instant::now();
        let mut sandbox = bench
            .runtime
            .create_sandbox(&bench.template, SandboxOptions::default())?;
        sandbox.call("bump", b"")?;
        cached.push(ms(started.elapsed()));
    }
    let mut first = Vec::new();
    for i in 0..bench.repeats.min(3) {
        let fresh = Runtime::new(RuntimeConfig::new(
            bench.work.join(format!("first-create-{i}")),
        ))?;
        let started = Instant::now();
        let template =
            fresh.load_template("stateful", &stasis_guests::bytes(stasis_guests::STATEFUL))?;
        let mut sandbox = fresh.create_sandbox(&template, SandboxOptions::default())?;
        sandbox.call("bump", b"")?;
        first.push(ms(started.elapsed()));
    }
    let engine = bench.runtime.engine().engine();
    let empty = wasmtime::Module::new(engine, wat::parse_str("(module)")?)?;
    let reference: Vec<f64> = (0..20)
        .map(|_| reference::empty_instantiation_ms(engine, &empty))
        .collect::<Result<_>>()?;
    let empty_ms = median(reference.clone());
    Ok(vec![
        Measurement::new("create (cached template)", json!({}), "ms", cached)
            .against("empty module instantiation", empty_ms),
        Measurement::new("create (first, compiling)", json!({}), "ms", first),
        Measurement::new("empty module instantiation", json!({}), "ms", reference),
    ])
}

/// `echo hi` in the shell guest: in-process (run the `sh` command module to completion in a sandbox and
/// collect its output), and over HTTP on loopback (the E2B/Novita `process.Process/Start` call an SDK makes).
pub fn command_round_trip(bench: &Bench) -> Result<Vec<Measurement>> {
    let sh = bench
        .runtime
        .load_template("sh", &stasis_guests::bytes(stasis_guests::SH))?;
    let mut sandbox = bench
        .runtime
        .create_sandbox(&sh, SandboxOptions::default())?;
    let args = ["-c".to_owned(), "echo hi".to_owned()];
    let mut in_process = Vec::new();
    for _ in 0..bench.repeats.max(10) {
        let started = Instant::now();
        let output = sandbox.run(&sh, &args, b"")?;
        in_process.push(ms(started.elapsed()));
        anyhow::ensure!(
            output.stdout == b"hi\n",
            "unexpected output {:?}",
            output.stdout
        );
    }

    let server = crate::http::Server::start(&bench.work.join("server-data"))?;
    let (id, token) = server.create_sandbox()?;
    let mut over_http = Vec::new();
    for _ in 0..bench.repeats.max(10) {
        let started = Instant::now();
        let reply = server.run_command(&id, &token, "echo hi")?;
        over_http.push(ms(started.elapsed()));
        // "hi\n" in base64, inside the stdout data event.
        anyhow::ensure!(
            reply.windows(4).any(|w| w == b"aGkK"),
            "no `hi` in the reply"
        );
    }
    let params = json!({ "command": "echo hi" });
    Ok(vec![
        Measurement::new(
            "command round trip (in-process)",
            params.clone(),
            "ms",
            in_process,
        ),
        Measurement::new(
            "command round trip (HTTP, loopback)",
            params,
            "ms",
            over_http,
        ),
    ])
}

/// How many paused sandboxes fit (disk per blob; they hold no RAM) and what a small running sandbox costs in RAM.
pub fn density(bench: &Bench, count: usize) -> Result<Vec<Measurement>> {
    let mut blob_kib = Vec::new();
    let rss_before = resident_bytes();
    let mut running = Vec::with_capacity(count);
    for _ in 0..count {
        let mut sandbox = bench
            .runtime
            .create_sandbox(&bench.template, SandboxOptions::default())?;
        sandbox.call("bump", b"")?;
        running.push(sandbox);
    }
    let running_mib =
        resident_bytes().saturating_sub(rss_before) as f64 / count as f64 / (1 << 20) as f64;
    for (i, sandbox) in running.iter_mut().enumerate() {
        let blob = bench.work.join(format!("density-{i}.blob"));
        let report = sandbox.pause(&blob).context("pausing for density")?;
        blob_kib.push(report.blob_bytes as f64 / 1024.0);
    }
    // A paused sandbox holds no memory in the runtime: once paused, all that remains of it is its blob.
    drop(running);
    for i in 0..count {
        std::fs::remove_file(bench.work.join(format!("density-{i}.blob")))?;
    }
    let params = json!({ "sandboxes": count });
    Ok(vec![
        Measurement::new(
            "density: disk per paused sandbox",
            params.clone(),
            "KiB",
            blob_kib,
        ),
        Measurement::new(
            "density: RAM per running small sandbox",
            params,
            "MiB",
            vec![running_mib],
        ),
    ])
}

/// The process's resident set size in bytes, from `/proc/self/statm` (0 where unavailable).
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|pages| pages.parse::<u64>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The Python code-interpreter guest (`guests/python`): compiling its module the first time and loading it
/// from the compiled-module cache, starting a context (a process), its first cell (which starts the
/// interpreter), a small cell, the linear memory a context holds, and a pause and resume of a context.
pub fn python(bench: &Bench) -> Result<Vec<Measurement>> {
    const MIB: f64 = (1 << 20) as f64;
    let wasm = stasis_guests::bytes(stasis_guests::PYTHON);
    let module = json!({ "module_mib": wasm.len() as f64 / MIB });

    // The bench's runtime starts with an empty cache: this load compiles.
    let started = Instant::now();
    let python = bench.runtime.load_template("python", &wasm)?;
    let first_compile = vec![ms(started.elapsed())];
    let mut cached = Vec::new();
    for i in 0..bench.repeats {
        let mut config = RuntimeConfig::new(bench.work.join(format!("python-load-{i}")));
        config.cache_dir = Some(bench.runtime.config().cache_dir());
        let runtime = Runtime::new(config)?;
        let started = Instant::now();
        runtime.load_template("python", &wasm)?;
        cached.push(ms(started.elapsed()));
    }

    // The memory of a sandbox without a Python context, to subtract.
    let mut bare = bench.sandbox_with(0, "")?;
    let bare_memory = bare
        .pause(&bench.work.join("python-bare.blob"))?
        .memory_bytes;
    std::fs::remove_file(bench.work.join("python-bare.blob"))?;

    let (mut spawns, mut first_cells, mut cells) = (Vec::new(), Vec::new(), Vec::new());
    let (mut memory_init, mut memory_used) = (Vec::new(), Vec::new());
    let (mut pauses, mut resumes, mut blobs) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..bench.repeats.min(3) {
        let mut sandbox = bench.sandbox_with(0, "")?;
        let started = Instant::now();
        let pid = sandbox.spawn_labeled(&python, "ctx")?;
        spawns.push(ms(started.elapsed()));
        let started = Instant::now();
        run_cell(&mut sandbox, pid, "None")?;
        first_cells.push(ms(started.elapsed()));
        for _ in 0..10 {
            let started = Instant::now();
            let value = run_cell(&mut sandbox, pid, "1+1")?;
            cells.push(ms(started.elapsed()));
            anyhow::ensure!(value == "2", "1+1 gave {value}");
        }
        let blob = bench.work.join(format!("python-{i}.blob"));
        let report = sandbox.pause(&blob)?;
        memory_init.push((report.memory_bytes - bare_memory) as f64 / MIB);
        sandbox = bench.runtime.resume(&blob, ResumeOptions::default())?;
        run_cell(
            &mut sandbox,
            pid,
            "import json, re, math, datetime\ndata = list(range(100000))\ndef f(x):\n    return x * 2",
        )?;
        let started = Instant::now();
        let report = sandbox.pause(&blob)?;
        pauses.push(ms(started.elapsed()));
        memory_used.push((report.memory_bytes - bare_memory) as f64 / MIB);
        blobs.push(report.blob_bytes as f64 / MIB);
        let started = Instant::now();
        let mut sandbox = bench.runtime.resume(&blob, ResumeOptions::default())?;
        let value = run_cell(&mut sandbox, pid, "f(len(data))")?;
        resumes.push(ms(started.elapsed()));
        anyhow::ensure!(value == "200000", "f(len(data)) gave {value}");
        std::fs::remove_file(&blob)?;
    }
    let used = json!({ "cells": "import json, re, math, datetime; 100 000 ints; a function" });
    Ok(vec![
        Measurement::new(
            "python module compile (first)",
            module.clone(),
            "ms",
            first_compile,
        ),
        Measurement::new("python module load (cached)", module, "ms", cached),
        Measurement::new("python context create", json!({}), "ms", spawns),
        Measurement::new(
            "python first cell (interpreter start)",
            json!({}),
            "ms",
            first_cells,
        ),
        Measurement::new("python cell `1+1`", json!({}), "ms", cells),
        Measurement::new(
            "python context memory after start",
            json!({}),
            "MiB",
            memory_init,
        ),
        Measurement::new(
            "python context memory after use",
            used.clone(),
            "MiB",
            memory_used,
        ),
        Measurement::new("python context pause", used.clone(), "ms", pauses),
        Measurement::new("python context resume + cell", used.clone(), "ms", resumes),
        Measurement::new("python context blob size", used, "MiB", blobs),
    ])
}

/// Runs a cell in Python context `pid` and returns the text of its main result (empty for none); a cell
/// that raises is an error.
fn run_cell(sandbox: &mut Sandbox, pid: u32, code: &str) -> Result<String> {
    let request = serde_json::to_vec(&json!({ "code": code, "env_vars": {} }))?;
    let response = sandbox
        .call_process(pid, "execute", &request)
        .with_context(|| format!("running the cell {code:?}"))?;
    let response: serde_json::Value = serde_json::from_slice(&response)?;
    anyhow::ensure!(
        response["error"].is_null(),
        "the cell {code:?} raised: {}",
        response["error"]
    );
    Ok(response["results"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}
