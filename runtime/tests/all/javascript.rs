//! The JavaScript code-interpreter guest (`guests/reactors/javascript`): a boa context per process, driven
//! through the `execute` handler of the interpreter protocol, whose variables outlive cells, CPU deadlines
//! and pauses.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result};
use stasis::{CallError, ResumeOptions, Runtime, Sandbox, SandboxLimits, SandboxOptions, Template};
use stasis_guest::interpreter::{EXECUTE_HANDLER, ExecuteRequest, ExecuteResponse, ExecutionError};

use crate::common::{assert_contains, runtime, runtime_with_limits, stateful};

/// The JavaScript interpreter template.
fn javascript(runtime: &Runtime) -> Result<Template> {
    Ok(runtime.load_template(
        "javascript",
        &stasis_guests::bytes(stasis_guests::JAVASCRIPT),
    )?)
}

/// A sandbox (of the `stateful` template) with one JavaScript context spawned in it; returns its pid.
fn sandbox_with_context(runtime: &Runtime) -> Result<(Sandbox, Template, u32)> {
    let mut sandbox = runtime.create_sandbox(&stateful(runtime)?, SandboxOptions::default())?;
    let template = javascript(runtime)?;
    let pid = sandbox.spawn_labeled(&template, "ctx")?;
    Ok((sandbox, template, pid))
}

/// Runs one cell with env vars in context `pid`.
fn execute_with_env(
    sandbox: &mut Sandbox,
    pid: u32,
    code: &str,
    env_vars: &[(&str, &str)],
) -> Result<ExecuteResponse> {
    let request = ExecuteRequest {
        code: code.to_owned(),
        env_vars: env_vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    };
    let response = sandbox.call_process(pid, EXECUTE_HANDLER, &serde_json::to_vec(&request)?)?;
    Ok(serde_json::from_slice(&response)?)
}

/// Runs one cell in context `pid`.
fn execute(sandbox: &mut Sandbox, pid: u32, code: &str) -> Result<ExecuteResponse> {
    execute_with_env(sandbox, pid, code, &[])
}

/// Runs a cell that must succeed and returns the text of its main result (`None` when it has none).
fn value(sandbox: &mut Sandbox, pid: u32, code: &str) -> Result<Option<String>> {
    let response = execute(sandbox, pid, code)?;
    if let Some(error) = response.error {
        anyhow::bail!("cell {code:?} failed: {error:?}");
    }
    Ok(response
        .results
        .into_iter()
        .find(|r| r.is_main_result)
        .map(|r| r.text))
}

/// Runs a cell that must fail and returns its error.
fn error(sandbox: &mut Sandbox, pid: u32, code: &str) -> Result<ExecutionError> {
    let response = execute(sandbox, pid, code)?;
    assert!(
        response.results.is_empty(),
        "a failed cell has no result: {response:?}"
    );
    response
        .error
        .with_context(|| format!("cell {code:?} should have failed"))
}

#[test]
fn var_let_const_functions_and_classes_persist_across_cells() -> Result<()> {
    let (_tmp, runtime) = runtime()?;
    let (mut sandbox, _, pid) = sandbox_with_context(&runtime)?;
    assert_eq!(
        value(
            &mut sandbox,
            pid,
            "var a = 1; let b = 2; const c = 3;\nfunction sum() { return a + b + c; }\nclass Point { constructor(x) { this.x = x; } }"
        )?,
        None
    );
    assert_eq!(value(&mut sandbox, pid, "sum()")?.as_deref(), Some("6"));
    assert_eq!(
        value(&mut sandbox, pid, "b = b * 10; a + b + c")?.as_deref(),
        Some("24")
    );
    assert_eq!(
        value(&mut sandbox, pid, "new Point(c).x")?.as_deref(),
        Some("3")
    );
    let reassigned = error(&mut sandbox, pid, "c = 4")?;
    assert_eq!(reassigned.name, "TypeError", "{reassigned:?}");
    let redeclared = error(&mut sandbox, pid, "let b = 0")?;
    assert_eq!(redeclared.name, "SyntaxError", "{redeclared:?}");
    assert_eq!(value(&mut sandbox, pid, "b")?.as_deref(), Some("20"));
    Ok(())
}

#[test]
fn standard_library_json_math_and_date() -> Result<()> {
    let (_tmp, runtime) = runtime()?;
    let (mut sandbox, _, pid) = sandbox_with_context(&runtime)?;
    assert_eq!(
        value(&mut sandbox, pid, "JSON.stringify({a: [1, 2], b: 'x'})")?.as_deref(),
        Some(r#""{\"a\":[1,2],\"b\":\"x\"}""#)
    );
    assert_eq!(
        value(&mut sandbox, pid, "JSON.parse('{\"n\": 41}').n + 1")?.as_deref(),
        Some("42")
    );
    assert_eq!(
        value(&mut sandbox, pid, "Math.max(3, 7, 5) + Math.floor(Math.PI)")?.as_deref(),
        Some("10")
    );
    let random = value(
        &mut sandbox,
        pid,
        "const r = Math.random(); r >= 0 && r < 1",
    )?;
    assert_eq!(random.as_deref(), Some("true"));
    assert_eq!(
        value(&mut sandbox, pid, "new Date(0).toISOString()")?.as_deref(),
        Some("\"1970-01-01T00:00:00.000Z\"")
    );
    assert_eq!(
        value(&mut sandbox, pid, "Date.now() > Date.UTC(2020, 0, 1)")?.as_deref(),
        Some("true"),
        "the clock is the host's"
    );
    assert_eq!(
        value(&mut sandbox, pid, "[3, 1, 2].sort().map(x => x * 2)")?.as_deref(),
        Some("[ 2, 4, 6 ]")
    );
    Ok(())
}

#[test]
fn main_result_is_the_completion_value_unless_undefined() -> Result<()> {
    let (_tmp, runtime) = runtime()?;
    let (mut sandbox, _, pid) = sandbox_with_context(&runtime)?;
    let response = execute(&mut sandbox, pid, "let n = 20;\nn + 22")?;
    assert_eq!(response.results.len(), 1);
    assert!(response.results[0].is_main_result);
    assert_eq!(response.results[0].text, "42");
    assert_eq!(
        value(&mut sandbox, pid, "'text'")?.as_deref(),
        Some("\"text\"")
    );
    assert_eq!(value(&mut sandbox, pid, "null")?.as_deref(), Some("null"));
    for silent in ["undefined", "void 0", "let m = 1", "function f() {}", ""] {
        let response = execute(&mut sandbox, pid, silent)?;
        assert_eq!(response.results, vec![], "cell {silent:?}");
        assert_eq!(response.error, None, "cell {silent:?}");
    }
    Ok(())
}

#[test]
fn console_log_goes_to_stdout_and_console_error_to_stderr() -> Result<()> {
    let (_tmp, runtime) = runtime()?;
    let (mut sandbox, _, pid) = sandbox_with_context(&runtime)?;
    let response = execute(
        &mut sandbox,
        pid,
        "console.log('hello', 42); console.info('info'); console.error('oops'); console.warn('careful')",
    )?;
    assert_eq!(response.results, vec![]);
    assert_eq!(
        String::from_utf8(sandbox.take_stdout(pid))?,
        "hello 42\ninfo\n"
    );
    assert_eq!(
        String::from_utf8(sandbox.take_stderr(pid))?,
        "oops\ncareful\n"
    );
    execute(
        &mut sandbox,
        pid,
        "console.group('g'); console.log('in'); console.groupEnd(); console.log('out')",
    )?;
    assert_eq!(
        String::from_utf8(sandbox.take_stdout(pid))?,
        "group: g\n  in\nout\n",
        "boa labels a group"
    );
    Ok(())
}

#[test]
fn thrown_errors_have_name_message_and_trace() -> Result<()> {
    let (_tmp, runtime) = runtime()?;
    let (mut sandbox, _, pid) = sandbox_with_context(&runtime)?;

    let reference = error(&mut sandbox, pid, "undefinedName + 1")?;
    assert_eq!(reference.name, "ReferenceError");
    assert_eq!(reference.value, "undefinedName is not defined");
    assert!(
        reference
            .traceback
            .starts_with("ReferenceError: undefinedName is not defined"),
        "{reference:?}"
    );

    let type_error = error(
        &mut sandbox,
        pid,
        "function deref(o) { return o.field; }\nderef(null)",
    )?;
    assert_eq!(type_error.name, "TypeError");
    assert_contains(
        &std::io::Error::other(type_error.traceback.clone()),
        "at deref (<cell 2>:1:",
    );

    let syntax = error(&mut sandbox, pid, "let = = 1")?;
    assert_eq!(syntax.name, "SyntaxError");
    assert!(!syntax.value.is_empty());

    let custom = error(&mut sandbox, pid, "throw new Error('boom')")?;
    assert_eq!(
        (custom.name.as_str(), custom.value.as_str()),
        ("Error", "boom")
    );
    assert!(custom.traceback.starts_with("Error: boom"), "{custom:?}");
    assert!(custom.traceback.contains("<cell 4>:1:"), "{custom:?}");

    let subclass = error(
        &mut sandbox,
        pid,
        "class ValidationError extends Error { constructor(m) { super(m); this.name = 'ValidationError'; } }\nthrow new ValidationError('bad input')",
    )?;
    assert_eq!(
        (subclass.name.as_str(), subclass.value.as_str()),
        ("ValidationError", "bad input")
    );

    let not_an_error = error(&mut sandbox, pid, "throw 'plain'")?;
    assert_eq!(
        (not_an_error.name.as_str(), not_an_error.value.as_str()),
        ("Error", "plain")
    );

    let recursion = error(
        &mut sandbox,
        pid,
        "function down() { return down(); }\ndown()",
    )?;
    assert_eq!(recursion.name, "RuntimeLimitError", "{recursion:?}");

    assert_eq!(
        value(&mut sandbox, pid, "1 + 1")?.as_deref(),
        Some("2"),
        "an error leaves the context usable"
    );
    Ok(())
}

#[test]
fn promises_are_settled_and_microtasks_run() -> Result<()> {
    let (_tmp, runtime) = runtime()?;
    let (mut sandbox, _, pid) = sandbox_with_context(&runtime)?;
    assert_eq!(
        value(&mut sandbox, pid, "Promise.resolve(20).then(v => v + 22)")?.as_deref(),
        Some("42")
    );
    assert_eq!(
        value(
            &mut sandbox,
            pid,
            "async function twice(x) { return 2 * await Promise.resolve(x); }\ntwice(21)"
        )?
        .as_deref(),
        Some("42")
    );
    execute(
        &mut sandbox,
        pid,
        "Promise.resolve('later').then(v => console.log(v)); console.log('now')",
    )?;
    assert_eq!(String::from_utf8(sandbox.take_stdout(pid))?, "now\nlater\n");
    let rejected = error(
        &mut sandbox,
        pid,
        "Promise.reject(new TypeError('refused'))",
    )?;
    assert_eq!(
        (rejected.name.as_str(), rejected.value.as_str()),
        ("TypeError", "refused")
    );
    assert_eq!(
        value(&mut sandbox, pid, "new Promise(() => {})")?.as_deref(),
        Some("Promise { <pending> }"),
        "a promise nothing settles is shown, not waited for"
    );
    let top_level_await = error(&mut sandbox, pid, "await Promise.resolve(1)")?;
    assert_eq!(top_level_await.name, "SyntaxError", "cells are scripts");
    Ok(())
}

#[test]
fn env_vars_are_visible_to_their_cell_only() -> Result<()> {
    let (_tmp, runtime) = runtime()?;
    let (mut sandbox, _, pid) = sandbox_with_context(&runtime)?;
    let response = execute_with_env(
        &mut sandbox,
        pid,
        "process.env.GREETING + ' ' + process.env.NAME",
        &[("GREETING", "hello"), ("NAME", "stasis")],
    )?;
    assert_eq!(response.results[0].text, "\"hello stasis\"");
    assert_eq!(
        value(&mut sandbox, pid, "typeof process.env.GREETING")?.as_deref(),
        Some("\"undefined\"")
    );
    Ok(())
}

#[test]
fn execution_count_increments_per_cell_errors_included() -> Result<()> {
    let (_tmp, runtime) = runtime()?;
    let (mut sandbox, _, pid) = sandbox_with_context(&runtime)?;
    let counts = ["1", "throw new Error('x')", "2", "let ="]
        .into_iter()
        .map(|code| Ok(execute(&mut sandbox, pid, code)?.execution_count))
        .collect::<Result<Vec<_>>>()?;
    assert_eq!(counts, vec![1, 2, 3, 4]);
    Ok(())
}

#[test]
fn a_malformed_request_is_a_guest_error_and_the_context_survives() -> Result<()> {
    let (_tmp, runtime) = runtime()?;
    let (mut sandbox, _, pid) = sandbox_with_context(&runtime)?;
    value(&mut sandbox, pid, "var kept = 'yes'")?;
    let refused = sandbox.call_process(pid, EXECUTE_HANDLER, b"{\"code\": 12}");
    assert!(matches!(refused, Err(CallError::Guest(_))), "{refused:?}");
    assert_contains(&refused.unwrap_err(), "invalid execute request");
    assert_eq!(
        value(&mut sandbox, pid, "kept")?.as_deref(),
        Some("\"yes\"")
    );
    Ok(())
}

#[test]
fn two_contexts_in_one_sandbox_are_independent() -> Result<()> {
    let (_tmp, runtime) = runtime()?;
    let (mut sandbox, template, first) = sandbox_with_context(&runtime)?;
    let second = sandbox.spawn_labeled(&template, "other")?;
    value(&mut sandbox, first, "var owner = 'first'")?;
    value(&mut sandbox, second, "var owner = 'second'")?;
    assert_eq!(
        value(&mut sandbox, first, "owner")?.as_deref(),
        Some("\"first\"")
    );
    assert_eq!(
        value(&mut sandbox, second, "owner")?.as_deref(),
        Some("\"second\"")
    );
    assert_eq!(execute(&mut sandbox, second, "1")?.execution_count, 3);
    assert_eq!(execute(&mut sandbox, first, "1")?.execution_count, 3);
    let labels: Vec<_> = sandbox.processes().into_iter().map(|p| p.label).collect();
    assert_eq!(labels, vec!["", "ctx", "other"]);
    Ok(())
}

#[test]
fn a_runaway_cell_is_stopped_and_poisons_only_its_context() -> Result<()> {
    let (_tmp, runtime) = runtime_with_limits(SandboxLimits {
        cpu_time_per_call: Duration::from_secs(2),
        ..SandboxLimits::default()
    })?;
    let (mut sandbox, template, runaway) = sandbox_with_context(&runtime)?;
    let healthy = sandbox.spawn_labeled(&template, "healthy")?;
    value(&mut sandbox, healthy, "var alive = 1")?;
    let stopped = execute(&mut sandbox, runaway, "while (true) {}");
    let stopped = stopped.expect_err("an endless loop cannot complete");
    assert!(
        matches!(
            stopped.downcast_ref::<CallError>(),
            Some(CallError::Timeout(_))
        ),
        "{stopped:?}"
    );
    let poisoned: Vec<_> = sandbox
        .processes()
        .into_iter()
        .map(|p| (p.pid, p.poisoned))
        .collect();
    assert!(poisoned.contains(&(runaway, true)), "{poisoned:?}");
    assert!(poisoned.contains(&(healthy, false)), "{poisoned:?}");
    let again = sandbox.call_process(runaway, EXECUTE_HANDLER, b"{\"code\": \"1\"}");
    assert!(
        matches!(again, Err(CallError::Poisoned(pid)) if pid == runaway),
        "{again:?}"
    );
    assert_eq!(
        value(&mut sandbox, healthy, "alive + 1")?.as_deref(),
        Some("2")
    );
    Ok(())
}

#[test]
fn variables_survive_pause_and_resume() -> Result<()> {
    let (tmp, runtime) = runtime()?;
    let (mut sandbox, _, pid) = sandbox_with_context(&runtime)?;
    value(
        &mut sandbox,
        pid,
        "let total = 0; const items = new Map(); function add(k, v) { items.set(k, v); total += v; return total; }",
    )?;
    value(&mut sandbox, pid, "add('a', 40)")?;
    let blob = tmp.path().join("js.blob");
    sandbox.pause(&blob)?;
    let mut resumed = runtime.resume(&blob, ResumeOptions::default())?;
    let info = resumed
        .processes()
        .into_iter()
        .find(|p| p.label == "ctx")
        .context("the labeled context is resumed")?;
    assert_eq!(
        value(&mut resumed, info.pid, "add('b', 2)")?.as_deref(),
        Some("42")
    );
    assert_eq!(
        value(&mut resumed, info.pid, "[...items.keys()].join()")?.as_deref(),
        Some("\"a,b\"")
    );
    assert_eq!(execute(&mut resumed, info.pid, "1")?.execution_count, 5);
    Ok(())
}
