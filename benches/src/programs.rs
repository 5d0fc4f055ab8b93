//! What starting a program from the shell costs: `echo hi | procs copy` (a program fed and drained through
//! host pipes) and `python3 -c pass` — from the interpreter's pre-initialised image (the default), and
//! started fresh, its interpreter built and its standard library imported on every run (a runtime with
//! `preinit_programs` off, on the same module cache) — each against `sh -c true` in the same run: the
//! shell's own start, which all of them include.

use std::time::Instant;

use anyhow::{Result, ensure};
use serde_json::json;
use stasis::{SandboxOptions, Template};

use crate::scenarios::Bench;
use crate::stats::{Measurement, ms};

/// Runs `line` with `sh -c` in a fresh sandbox of `sh` and returns how long the command took.
fn time_line(bench: &Bench, sh: &Template, line: &str, expected: &str) -> Result<f64> {
    let mut sandbox = bench
        .runtime
        .create_sandbox(sh, SandboxOptions::default())?;
    let started = Instant::now();
    let output = sandbox.run(sh, &["-c".into(), line.into()], b"")?;
    let took = ms(started.elapsed());
    ensure!(
        output.exit_code == 0 && output.stdout == expected.as_bytes(),
        "{line}: {output:?}"
    );
    Ok(took)
}

/// The rows: the pipe through a program always, `python3 -c pass` unless `quick` (its first load
/// compiles the interpreter).
pub fn start(bench: &Bench, quick: bool) -> Result<Vec<Measurement>> {
    let runtime = &bench.runtime;
    let sh = runtime.load_template("sh", &stasis_guests::bytes(stasis_guests::SH))?;
    let procs = runtime.load_template("procs", &stasis_guests::bytes(stasis_guests::PROCS))?;
    runtime.register_program("procs", procs.sha256());
    let mut lines: Vec<(&str, &str, &str, &Bench, &Template)> =
        vec![("pipe", "echo hi | procs copy", "hi\n", bench, &sh)];
    // The same programs on a runtime whose programs start fresh.
    let fresh;
    let fresh_sh;
    let mut image_ready = None;
    if !quick {
        let python =
            runtime.load_template("python", &stasis_guests::bytes(stasis_guests::PYTHON))?;
        runtime.register_program("python3", python.sha256());
        let started = Instant::now();
        ensure!(
            runtime.prepare_program("python3"),
            "python3 has no pre-initialised image"
        );
        // Made on a cold cache, read back from the cache directory on a warm one.
        image_ready = Some(ms(started.elapsed()));
        lines.push(("python3", "python3 -c pass", "", bench, &sh));
        let mut config = runtime.config().clone();
        config.preinit_programs = false;
        fresh = Bench {
            runtime: stasis::Runtime::new(config)?,
            template: bench.template.clone(),
            work: bench.work.clone(),
            repeats: bench.repeats,
        };
        fresh_sh = fresh
            .runtime
            .load_template("sh", &stasis_guests::bytes(stasis_guests::SH))?;
        let python = fresh
            .runtime
            .load_template("python", &stasis_guests::bytes(stasis_guests::PYTHON))?;
        fresh.runtime.register_program("python3", python.sha256());
        lines.push((
            "python3 (fresh, no image)",
            "python3 -c pass",
            "",
            &fresh,
            &fresh_sh,
        ));
    }
    let repeats = bench.repeats.max(10);
    let mut rows = Vec::new();
    for (name, line, expected, bench, sh) in lines {
        // Warm: the first run maps the module and faults its pages in.
        time_line(bench, sh, line, expected)?;
        let (mut runs, mut bare) = (Vec::new(), Vec::new());
        for _ in 0..repeats {
            runs.push(time_line(bench, sh, line, expected)?);
            bare.push(time_line(bench, sh, "true", "")?);
        }
        let bare_median = Measurement::new("", json!({}), "ms", bare).median;
        rows.push(
            Measurement::new(
                "program start",
                json!({ "program": name, "line": line }),
                "ms",
                runs,
            )
            .against("sh -c true", bare_median),
        );
    }
    if let Some(took) = image_ready {
        rows.push(Measurement::new(
            "program image ready (made, or read from the cache)",
            json!({ "program": "python3" }),
            "ms",
            vec![took],
        ));
    }
    Ok(rows)
}
