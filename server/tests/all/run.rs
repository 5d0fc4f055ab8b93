//! `stasis run`: stdio passed through, preopens, environment, and the guest's exit code as the tool's.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::Result;

fn stasis() -> Command {
    crate::common::stasis_command()
}

#[test]
fn stdio_and_exit_code_pass_through() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("b.txt"), "")?;
    std::fs::write(dir.path().join("a.txt"), "")?;
    let mut child = stasis()
        .arg("run")
        .arg("--dir")
        .arg(format!("{}::data", dir.path().display()))
        .arg(stasis_guests::STDIO_EXIT)
        .args(["7", "data"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(b"shout this\n")?;
    let output = child.wait_with_output()?;
    assert_eq!(output.status.code(), Some(7));
    assert_eq!(
        String::from_utf8(output.stdout)?,
        "SHOUT THIS\ndata: a.txt b.txt\n"
    );
    assert_eq!(String::from_utf8(output.stderr)?, "copied 11 bytes\n");
    Ok(())
}

#[test]
fn arguments_reach_the_guest() -> Result<()> {
    let output = stasis()
        .arg("run")
        .arg(stasis_guests::HELLO)
        .args(["--not-a-flag", "x"])
        .output()?;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8(output.stdout)?, "hello --not-a-flag x\n");
    Ok(())
}

#[test]
fn a_missing_module_is_a_clear_error() -> Result<()> {
    let output = stasis().args(["run", "/no/such/module.wasm"]).output()?;
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8(output.stderr)?.contains("/no/such/module.wasm"));
    Ok(())
}

#[test]
fn a_malformed_env_is_a_clear_error() -> Result<()> {
    let output = stasis()
        .args(["run", "--env", "NOEQUALS", stasis_guests::HELLO])
        .output()?;
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8(output.stderr)?.contains("NAME=VALUE"));
    Ok(())
}

/// A WAT command module (`stasis run` compiles text too) that exits with `fd_prestat_get(3)`'s errno plus
/// 10 times that of `fd_prestat_get(4)`.
const PRESTAT_PROBE: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (call $exit (i32.add (call $get (i32.const 3) (i32.const 0))
                         (i32.mul (i32.const 10) (call $get (i32.const 4) (i32.const 0)))))))"#;

#[test]
fn the_guest_gets_exactly_the_dirs_from_fd_3() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let probe = dir.path().join("probe.wat");
    std::fs::write(&probe, PRESTAT_PROBE)?;
    // No --dir: fd 3 is not open (EBADF = 8), as under `wasmtime run`.
    let output = stasis().arg("run").arg(&probe).output()?;
    assert_eq!(output.status.code(), Some(8 + 10 * 8), "{output:?}");
    // One --dir (even named "/"): it is fd 3 and nothing is at fd 4.
    let output = stasis()
        .arg("run")
        .arg("--dir")
        .arg(format!("{}::/", dir.path().display()))
        .arg(&probe)
        .output()?;
    assert_eq!(output.status.code(), Some(10 * 8), "{output:?}");
    Ok(())
}
