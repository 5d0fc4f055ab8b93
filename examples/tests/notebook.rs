//! The edges of the guest SDK's reactor ABI, seen through the example guest (`examples/guest`): payloads
//! that are not text, a request larger than the guest's whole memory, an empty response, the exported ABI
//! version, and every error the guest returns for a bad request. Ordinary calls, handler errors and
//! missing handlers are the runtime suite's (`runtime/tests/all/sandbox.rs`); pausing and resuming this
//! guest is `examples/custom_guest.rs`, run by CI.

use std::path::Path;

use anyhow::{Context, Result};
use stasis::snapshot::EncodeOptions;
use stasis::{CallError, Runtime, RuntimeConfig, Sandbox, SandboxOptions};
use wasmtime::Val;

/// A runtime in a temporary directory and a sandbox of the example guest; keep the directory alive.
fn notebook() -> Result<(tempfile::TempDir, Sandbox)> {
    let tmp = tempfile::tempdir()?;
    let runtime = Runtime::new(RuntimeConfig::new(tmp.path()))?;
    let wasm = std::fs::read(stasis_examples::NOTEBOOK_GUEST)
        .with_context(|| format!("reading {}", stasis_examples::NOTEBOOK_GUEST))?;
    let template = runtime.load_template("notebook", &wasm)?;
    let sandbox = runtime.create_sandbox(&template, SandboxOptions::default())?;
    Ok((tmp, sandbox))
}

/// `set NAME CONTENT` as the guest expects it: `NAME\nCONTENT`.
fn set_request(name: &[u8], content: &[u8]) -> Vec<u8> {
    [name, b"\n", content].concat()
}

/// The message of a guest error, or a failure naming what came back instead.
fn guest_error(result: Result<Vec<u8>, CallError>) -> Result<String> {
    match result {
        Err(CallError::Guest(message)) => Ok(message),
        other => anyhow::bail!("expected a guest error, got {other:?}"),
    }
}

#[test]
fn binary_payloads_round_trip_byte_for_byte() -> Result<()> {
    let (_tmp, mut sandbox) = notebook()?;
    // Every byte value, NULs and newlines included, and bytes that are not UTF-8.
    let content: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    sandbox.call("set", &set_request(b"bytes", &content))?;
    assert_eq!(sandbox.call("get", b"bytes")?, content);
    Ok(())
}

#[test]
fn a_request_larger_than_the_guests_memory_grows_it() -> Result<()> {
    let (tmp, mut sandbox) = notebook()?;
    // 8 MiB: `stasis_alloc` must grow the guest's memory before the host can write the request into it.
    let content: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    let before = memory_bytes(&mut sandbox, &tmp.path().join("before.blob"))?;
    assert!(
        before < content.len() as u64,
        "the guest already has {before} bytes of memory: the request would not make it grow"
    );
    assert_eq!(sandbox.call("set", &set_request(b"big", &content))?, b"1");
    assert_eq!(sandbox.call("get", b"big")?, content);
    Ok(())
}

/// How many bytes of linear memory the sandbox has, as a snapshot (a pause that keeps it running) sees it.
fn memory_bytes(sandbox: &mut Sandbox, blob: &Path) -> Result<u64> {
    Ok(sandbox
        .snapshot(blob, &EncodeOptions::default())?
        .memory_bytes)
}

#[test]
fn an_empty_response_is_an_empty_success() -> Result<()> {
    let (_tmp, mut sandbox) = notebook()?;
    sandbox.call("set", b"empty\n")?;
    assert_eq!(sandbox.call("get", b"empty")?, b"");
    Ok(())
}

#[test]
fn the_guest_exports_the_sdks_abi_version() -> Result<()> {
    let (_tmp, mut sandbox) = notebook()?;
    let pid = sandbox.pids()[0];
    let version = sandbox.invoke(pid, "stasis_abi_version", &[])?;
    assert!(
        matches!(version[..], [Val::I32(v)] if v == stasis_guest::ABI_VERSION),
        "{version:?}"
    );
    Ok(())
}

#[test]
fn bad_requests_are_guest_errors_and_the_guest_stays_usable() -> Result<()> {
    let (_tmp, mut sandbox) = notebook()?;
    assert_eq!(
        guest_error(sandbox.call("set", b"no newline"))?,
        "usage: NAME\\nCONTENT"
    );
    assert_eq!(
        guest_error(sandbox.call("set", b"\ncontent"))?,
        "a note name must not be empty"
    );
    assert!(
        guest_error(sandbox.call("set", b"\xff\xfe\ncontent"))?
            .starts_with("a note name must be UTF-8")
    );
    assert!(guest_error(sandbox.call("get", b"\xff"))?.starts_with("a note name must be UTF-8"));
    assert_eq!(
        guest_error(sandbox.call("get", b""))?,
        "a note name must not be empty"
    );
    assert_eq!(
        guest_error(sandbox.call("get", b"absent"))?,
        "no note named \"absent\""
    );
    // None of them trapped or changed the notebook.
    assert_eq!(sandbox.call("count", b"")?, b"0");
    Ok(())
}
