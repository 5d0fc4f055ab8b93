//! The Python code-interpreter guest (`guests/python`, RustPython): each process is one context whose
//! variables, functions and imports persist across cells, and across a pause and a resume in another OS
//! process. A sandbox of the `stateful` template hosts the contexts as labeled processes, as the server does.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use stasis::{CallError, ResumeOptions, Sandbox, SandboxLimits, SandboxOptions, Template};
use stasis_guest::interpreter::{EXECUTE_HANDLER, ExecuteRequest, ExecuteResponse, ExecutionError};
use tempfile::TempDir;

use crate::common::{assert_contains, python, python_runtime, stateful};

/// A sandbox with the Python template loaded.
struct Fixture {
    _tmp: TempDir,
    python: Template,
    sandbox: Sandbox,
}

impl Fixture {
    fn new() -> Result<Self> {
        Self::with_limits(SandboxLimits::default())
    }

    fn with_limits(limits: SandboxLimits) -> Result<Self> {
        let (tmp, runtime) = python_runtime(limits)?;
        let python = python(&runtime)?;
        let sandbox = runtime.create_sandbox(&stateful(&runtime)?, SandboxOptions::default())?;
        Ok(Self {
            _tmp: tmp,
            python,
            sandbox,
        })
    }

    /// Starts a new Python context.
    fn context(&mut self, label: &str) -> Result<u32> {
        Ok(self.sandbox.spawn_labeled(&self.python, label)?)
    }
}

/// Runs `code` in context `pid`.
fn execute(sandbox: &mut Sandbox, pid: u32, code: &str) -> Result<ExecuteResponse> {
    execute_with_env(sandbox, pid, code, BTreeMap::new())
}

fn execute_with_env(
    sandbox: &mut Sandbox,
    pid: u32,
    code: &str,
    env_vars: BTreeMap<String, String>,
) -> Result<ExecuteResponse> {
    let request = serde_json::to_vec(&ExecuteRequest {
        code: code.to_owned(),
        env_vars,
    })?;
    let response = sandbox.call_process(pid, EXECUTE_HANDLER, &request)?;
    Ok(serde_json::from_slice(&response)?)
}

/// The text of the cell's main result, failing when the cell raised.
fn main_result(response: &ExecuteResponse) -> Result<Option<&str>> {
    if let Some(error) = &response.error {
        bail!(
            "the cell raised {}: {}\n{}",
            error.name,
            error.value,
            error.traceback
        );
    }
    Ok(response
        .results
        .iter()
        .find(|r| r.is_main_result)
        .map(|r| r.text.as_str()))
}

/// Runs a cell that must succeed and returns its main result.
fn value(sandbox: &mut Sandbox, pid: u32, code: &str) -> Result<Option<String>> {
    Ok(main_result(&execute(sandbox, pid, code)?)?.map(str::to_owned))
}

/// Runs a cell that must raise and returns the error.
fn raised(sandbox: &mut Sandbox, pid: u32, code: &str) -> Result<ExecutionError> {
    let response = execute(sandbox, pid, code)?;
    match response.error {
        Some(error) => Ok(error),
        None => bail!("the cell {code:?} did not raise: {:?}", response.results),
    }
}

#[test]
fn variables_functions_and_imports_persist_across_cells() -> Result<()> {
    let mut f = Fixture::new()?;
    let pid = f.context("ctx")?;
    let s = &mut f.sandbox;
    assert_eq!(value(s, pid, "x = 20")?, None);
    assert_eq!(value(s, pid, "def double(n):\n    return n * 2\n")?, None);
    assert_eq!(value(s, pid, "import math, json, re, datetime")?, None);
    assert_eq!(value(s, pid, "double(x) + 2")?.as_deref(), Some("42"));
    assert_eq!(value(s, pid, "math.sqrt(16)")?.as_deref(), Some("4.0"));
    assert_eq!(
        value(s, pid, "json.dumps({'a': [1, 2]})")?.as_deref(),
        Some(r#"'{"a": [1, 2]}'"#)
    );
    assert_eq!(
        value(s, pid, r"re.findall(r'\d+', 'a1b22c333')")?.as_deref(),
        Some("['1', '22', '333']")
    );
    assert_eq!(
        value(
            s,
            pid,
            "datetime.date(2024, 2, 28) + datetime.timedelta(days=2)"
        )?
        .as_deref(),
        Some("datetime.date(2024, 3, 1)")
    );
    Ok(())
}

/// RustPython 0.5.0 keeps 15 bits of reference count on 32-bit targets: the 32768th live int (each holds a
/// reference to the `int` type) aborted the interpreter. The guest builds a patched `rustpython-common`.
#[test]
fn a_hundred_thousand_references_to_one_object_do_not_abort_the_interpreter() -> Result<()> {
    let mut f = Fixture::new()?;
    let pid = f.context("ctx")?;
    let s = &mut f.sandbox;
    assert_eq!(
        value(
            s,
            pid,
            "zeros = [0] * 100000
len(zeros)"
        )?
        .as_deref(),
        Some("100000")
    );
    assert_eq!(
        value(
            s,
            pid,
            "numbers = list(range(100000))
sum(numbers)"
        )?
        .as_deref(),
        Some("4999950000")
    );
    assert_eq!(
        value(s, pid, "len([None] * 300000)")?.as_deref(),
        Some("300000")
    );
    Ok(())
}

#[test]
fn the_trailing_expression_is_the_main_result() -> Result<()> {
    let mut f = Fixture::new()?;
    let pid = f.context("ctx")?;
    let s = &mut f.sandbox;
    // A bare constant, which RustPython's own block-expression mode cannot compile.
    assert_eq!(value(s, pid, "42")?.as_deref(), Some("42"));
    assert_eq!(value(s, pid, "'hello'")?.as_deref(), Some("'hello'"));
    assert_eq!(value(s, pid, "1 + 1")?.as_deref(), Some("2"));
    assert_eq!(
        value(s, pid, "y = 5\ny * 3  # a comment")?.as_deref(),
        Some("15")
    );
    assert_eq!(value(s, pid, "(y +\n 1)")?.as_deref(), Some("6"));
    assert_eq!(value(s, pid, "y;")?.as_deref(), Some("5"));
    // No main result: a trailing None, an assignment, a statement, an empty cell.
    assert_eq!(value(s, pid, "None")?, None);
    assert_eq!(
        value(s, pid, "print")?.as_deref(),
        Some("<built-in function print>")
    );
    assert_eq!(value(s, pid, "print('side effect')")?, None);
    assert_eq!(value(s, pid, "z = 1")?, None);
    assert_eq!(value(s, pid, "for i in range(3):\n    i\n")?, None);
    assert_eq!(value(s, pid, "")?, None);
    assert_eq!(value(s, pid, "# only a comment\n")?, None);
    Ok(())
}

#[test]
fn printing_goes_to_stdout_and_stderr() -> Result<()> {
    let mut f = Fixture::new()?;
    let pid = f.context("ctx")?;
    let s = &mut f.sandbox;
    value(
        s,
        pid,
        "import sys\nprint('hello', 42)\nprint('oops', file=sys.stderr)\nsys.stdout.write('no newline')",
    )?;
    assert_eq!(
        String::from_utf8(s.take_stdout(pid))?,
        "hello 42\nno newline"
    );
    assert_eq!(String::from_utf8(s.take_stderr(pid))?, "oops\n");
    // What a failing cell printed before it failed is there too.
    raised(s, pid, "print('before')\n1 / 0")?;
    assert_eq!(String::from_utf8(s.take_stdout(pid))?, "before\n");
    Ok(())
}

#[test]
fn errors_come_back_with_their_name_message_and_traceback() -> Result<()> {
    let mut f = Fixture::new()?;
    let pid = f.context("ctx")?;
    let s = &mut f.sandbox;

    let error = raised(s, pid, "undefined_name + 1")?;
    assert_eq!(error.name, "NameError");
    assert_contains_text(&error.value, "undefined_name");
    assert_contains_text(&error.traceback, "NameError");

    value(s, pid, "def divide(a, b):\n    return a / b\n")?;
    let error = raised(s, pid, "x = 1\ndivide(x, 0)")?;
    assert_eq!(error.name, "ZeroDivisionError");
    assert_contains_text(&error.value, "division by zero");
    // The traceback walks through both cells, at their lines, with their source.
    assert_contains_text(&error.traceback, "Traceback (most recent call last)");
    assert_contains_text(&error.traceback, "line 2");
    assert_contains_text(&error.traceback, "divide(x, 0)");
    assert_contains_text(&error.traceback, "return a / b");
    assert_contains_text(&error.traceback, "in divide");
    assert!(
        !error.traceback.contains("stasis-driver"),
        "the driver's own frames show: {}",
        error.traceback
    );

    let error = raised(s, pid, "def broken(:\n    pass")?;
    assert_eq!(error.name, "SyntaxError");
    assert_contains_text(&error.traceback, "SyntaxError");

    let error = raised(s, pid, "raise ValueError('custom message')")?;
    assert_eq!(error.name, "ValueError");
    assert_eq!(error.value, "custom message");

    // The context is still usable after errors.
    assert_eq!(value(s, pid, "divide(9, 3)")?.as_deref(), Some("3.0"));
    Ok(())
}

fn assert_contains_text(haystack: &str, needle: &str) {
    assert!(
        haystack.contains(needle),
        "expected {needle:?} in {haystack:?}"
    );
}

/// Unbounded recursion exhausted wasmtime's native stack before RustPython's recursion limit, trapping the
/// process; the guest lowers the limit so that it is a Python exception instead.
#[test]
fn unbounded_recursion_is_a_recursion_error_not_a_trap() -> Result<()> {
    let mut f = Fixture::new()?;
    let pid = f.context("ctx")?;
    let s = &mut f.sandbox;
    value(s, pid, "def down(n):\n    return down(n + 1)\n")?;
    assert_eq!(raised(s, pid, "down(0)")?.name, "RecursionError");
    value(
        s,
        pid,
        "class Node:\n    def walk(self, n, **options):\n        return [self.walk(n + 1, **options) for _ in range(1)][0]\n",
    )?;
    assert_eq!(
        raised(s, pid, "Node().walk(0, depth=1)")?.name,
        "RecursionError"
    );
    assert_eq!(
        raised(
            s,
            pid,
            "import copy\nd = []\nfor _ in range(10000):\n    d = [d]\ncopy.deepcopy(d)"
        )?
        .name,
        "RecursionError"
    );
    // Recursion within the limit works, and the context survives the errors.
    value(
        s,
        pid,
        "def depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\n",
    )?;
    assert_eq!(value(s, pid, "depth(150)")?.as_deref(), Some("150"));
    Ok(())
}

#[test]
fn the_execution_count_counts_every_cell() -> Result<()> {
    let mut f = Fixture::new()?;
    let pid = f.context("ctx")?;
    let s = &mut f.sandbox;
    assert_eq!(execute(s, pid, "a = 1")?.execution_count, 1);
    assert_eq!(execute(s, pid, "a")?.execution_count, 2);
    assert_eq!(execute(s, pid, "1 / 0")?.execution_count, 3);
    assert_eq!(execute(s, pid, "(")?.execution_count, 4);
    assert_eq!(execute(s, pid, "a")?.execution_count, 5);
    Ok(())
}

#[test]
fn env_vars_are_set_for_the_cell_only() -> Result<()> {
    let mut f = Fixture::new()?;
    let pid = f.context("ctx")?;
    let s = &mut f.sandbox;
    let env = BTreeMap::from([("STASIS_GREETING".to_owned(), "hi there".to_owned())]);
    let response = execute_with_env(
        s,
        pid,
        "import os\nos.environ['STASIS_GREETING']",
        env.clone(),
    )?;
    assert_eq!(main_result(&response)?, Some("'hi there'"));
    assert_eq!(
        value(s, pid, "os.environ.get('STASIS_GREETING')")?,
        None,
        "the variable outlived its cell"
    );
    // An error does not leave the variable behind either.
    let response = execute_with_env(s, pid, "1 / 0", env)?;
    assert!(response.error.is_some());
    assert_eq!(
        value(s, pid, "'STASIS_GREETING' in os.environ")?.as_deref(),
        Some("False")
    );
    Ok(())
}

#[test]
fn two_contexts_in_one_sandbox_are_independent() -> Result<()> {
    let mut f = Fixture::new()?;
    let first = f.context("first")?;
    let second = f.context("second")?;
    let s = &mut f.sandbox;
    value(s, first, "x = 'first'")?;
    value(s, second, "x = 'second'")?;
    assert_eq!(value(s, first, "x")?.as_deref(), Some("'first'"));
    assert_eq!(value(s, second, "x")?.as_deref(), Some("'second'"));
    value(s, first, "only_here = 1")?;
    assert_eq!(raised(s, second, "only_here")?.name, "NameError");
    assert_eq!(execute(s, second, "None")?.execution_count, 4);
    let labels: Vec<String> = s.processes().into_iter().map(|p| p.label).collect();
    assert_eq!(labels, ["", "first", "second"]);
    Ok(())
}

#[test]
fn a_runaway_cell_is_stopped_and_poisons_only_its_context() -> Result<()> {
    let mut f = Fixture::with_limits(SandboxLimits {
        cpu_time_per_call: Duration::from_secs(3),
        ..SandboxLimits::default()
    })?;
    let runaway = f.context("runaway")?;
    let healthy = f.context("healthy")?;
    let s = &mut f.sandbox;
    value(s, runaway, "x = 1")?;
    value(s, healthy, "y = 2")?;
    let error =
        execute(s, runaway, "while True: pass").expect_err("an endless loop must not return");
    let call_error = error.downcast_ref::<CallError>().context("a CallError")?;
    assert!(
        matches!(call_error, CallError::Timeout(_)),
        "expected a timeout, got {call_error:?}"
    );
    let poisoned = s
        .processes()
        .into_iter()
        .find(|p| p.pid == runaway)
        .context("the runaway process is listed")?;
    assert!(poisoned.poisoned);
    let error = execute(s, runaway, "x").expect_err("a poisoned context refuses cells");
    assert_contains(error.as_ref(), "restarted");
    assert_eq!(value(s, healthy, "y")?.as_deref(), Some("2"));
    Ok(())
}

#[test]
fn a_malformed_request_is_refused() -> Result<()> {
    let mut f = Fixture::new()?;
    let pid = f.context("ctx")?;
    let error = f
        .sandbox
        .call_process(pid, EXECUTE_HANDLER, b"not json")
        .expect_err("a request that is not JSON must fail");
    assert!(matches!(error, CallError::Guest(_)), "got {error:?}");
    assert_contains(&error, "invalid execute request");
    // The refusal is the guest's answer, not a trap: the context keeps working.
    assert_eq!(value(&mut f.sandbox, pid, "1")?.as_deref(), Some("1"));
    Ok(())
}

const BLOB_VAR: &str = "STASIS_PYTHON_CHILD_BLOB";
const REPORT_VAR: &str = "STASIS_PYTHON_CHILD_REPORT";

#[test]
fn a_context_paused_here_resumes_in_another_process() -> Result<()> {
    let mut f = Fixture::new()?;
    let pid = f.context("ctx")?;
    let s = &mut f.sandbox;
    value(
        s,
        pid,
        "import math\ndef area(r):\n    return round(math.pi * r * r, 2)\nsecret = 'kept across the pause'",
    )?;
    let blob = f._tmp.path().join("python.blob");
    s.pause(&blob)?;
    let report = f._tmp.path().join("child-report.txt");
    let status = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "python::child_resumes_a_python_context",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(BLOB_VAR, &blob)
        .env(REPORT_VAR, &report)
        .status()?;
    if !status.success() {
        bail!("the child process failed: {status}");
    }
    assert_eq!(
        std::fs::read_to_string(&report)?,
        "ctx\n'kept across the pause'\n12.57\n4\n"
    );
    Ok(())
}

/// The child half of the test above; does nothing when run by the ordinary test harness.
#[test]
fn child_resumes_a_python_context() -> Result<()> {
    let (Some(blob), Some(report)) = (std::env::var_os(BLOB_VAR), std::env::var_os(REPORT_VAR))
    else {
        return Ok(());
    };
    let (_tmp, runtime) = python_runtime(SandboxLimits::default())?;
    stateful(&runtime)?;
    python(&runtime)?;
    let mut sandbox = runtime.resume(blob.as_ref(), ResumeOptions::default())?;
    let process = sandbox
        .processes()
        .into_iter()
        .find(|p| p.label == "ctx")
        .context("the Python context was restored under its label")?;
    let secret = value(&mut sandbox, process.pid, "secret")?.unwrap_or_default();
    let area = value(&mut sandbox, process.pid, "area(2)")?.unwrap_or_default();
    let count = execute(&mut sandbox, process.pid, "None")?.execution_count;
    std::fs::write(
        report,
        format!("{}\n{secret}\n{area}\n{count}\n", process.label),
    )?;
    Ok(())
}
