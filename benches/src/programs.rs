//! What starting a program from the shell costs: `echo hi | procs copy` (a program fed and drained through
//! host pipes) and `python3 -c pass` (the interpreter, compiled once, instantiated and initialised per
//! run), each against `sh -c true` in the same run — the shell's own start, which both include.

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
    let mut lines: Vec<(&str, &str, &str)> = vec![("pipe", "echo hi | procs copy", "hi\n")];
    if !quick {
        let python =
            runtime.load_template("python", &stasis_guests::bytes(stasis_guests::PYTHON))?;
        runtime.register_program("python3", python.sha256());
        lines.push(("python3", "python3 -c pass", ""));
    }
    let repeats = bench.repeats.max(10);
    let mut rows = Vec::new();
    for (name, line, expected) in lines {
        // Warm: the first run maps the module and faults its pages in.
        time_line(bench, &sh, line, expected)?;
        let (mut runs, mut bare) = (Vec::new(), Vec::new());
        for _ in 0..repeats {
            runs.push(time_line(bench, &sh, line, expected)?);
            bare.push(time_line(bench, &sh, "true", "")?);
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
    Ok(rows)
}
