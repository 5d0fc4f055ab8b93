//! `stasis run`: stdio passed through, preopens, environment, and the guest's exit code as the tool's.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::Result;

fn stasis() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stasis"))
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
