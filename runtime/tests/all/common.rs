//! Fixtures shared by the test areas: a runtime in a temporary data directory and the guest templates.

use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::Result;
use stasis::{Runtime, RuntimeConfig, SandboxLimits, Template};
use tempfile::TempDir;

/// A runtime whose data directory is removed with the returned guard.
pub fn runtime() -> Result<(TempDir, Runtime)> {
    let dir = tempfile::tempdir()?;
    let runtime = Runtime::new(RuntimeConfig::new(dir.path().join("data")))?;
    Ok((dir, runtime))
}

/// A runtime with the given limits.
pub fn runtime_with_limits(limits: SandboxLimits) -> Result<(TempDir, Runtime)> {
    let dir = tempfile::tempdir()?;
    let mut config = RuntimeConfig::new(dir.path().join("data"));
    config.limits = limits;
    Ok((dir, Runtime::new(config)?))
}

/// The `stateful` reactor guest (see `guests/reactors/stateful`).
pub fn stateful(runtime: &Runtime) -> Result<Template> {
    Ok(runtime.load_template("stateful", &stasis_guests::bytes(stasis_guests::STATEFUL))?)
}

/// The compiled-module cache shared by every test runtime that loads the Python guest: compiling that
/// module takes long, so it is compiled once per target directory rather than once per test.
pub fn shared_cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("module-cache")
}

/// A runtime with the given limits whose compiled-module cache is [`shared_cache_dir`].
pub fn python_runtime(limits: SandboxLimits) -> Result<(TempDir, Runtime)> {
    let dir = tempfile::tempdir()?;
    let mut config = RuntimeConfig::new(dir.path().join("data"));
    config.limits = limits;
    config.cache_dir = Some(shared_cache_dir());
    Ok((dir, Runtime::new(config)?))
}

/// The Python code-interpreter guest (see `guests/python`). Tests load it one at a time, so that on a cold
/// cache one of them compiles it and the others find it compiled instead of compiling it again in parallel.
pub fn python(runtime: &Runtime) -> Result<Template> {
    python_named(runtime, "python")
}

/// The Python guest as template `name`, which its processes see as their program name (argv\[0\]): the
/// program tests load it as `python3`, the name a shell runs it by.
pub fn python_named(runtime: &Runtime, name: &str) -> Result<Template> {
    static LOADING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = LOADING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    Ok(runtime.load_template(name, &stasis_guests::bytes(stasis_guests::PYTHON))?)
}

/// Calls a handler of the sandbox's main process and returns the response as text.
pub fn call(sandbox: &mut stasis::Sandbox, handler: &str, request: &str) -> Result<String> {
    Ok(String::from_utf8(
        sandbox.call(handler, request.as_bytes())?,
    )?)
}

/// Asserts that an error's chain mentions `needle`.
pub fn assert_contains(error: &dyn std::error::Error, needle: &str) {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    assert!(
        chain.contains(needle),
        "expected {needle:?} in error chain {chain:?}"
    );
}
