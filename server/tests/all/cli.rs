//! The client subcommands against a real `stasis serve`, and `stasis blob inspect` on real blobs.

use std::process::Output;

use anyhow::{Context, Result};

use crate::serve::{KEY, Serve};

/// Runs `stasis ARGS…` against `server`, the key from the environment as a user would set it.
fn stasis(server: &Serve, args: &[&str]) -> Result<Output> {
    Ok(crate::common::stasis_command()
        .arg("sandbox")
        .args(["--url", &format!("http://{}", server.address)])
        .args(args)
        .env("STASIS_API_KEY", KEY)
        .output()?)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn inspect(path: &std::path::Path) -> Result<Output> {
    Ok(crate::common::stasis_command()
        .args(["blob", "inspect"])
        .arg(path)
        .output()?)
}

#[test]
fn the_client_drives_a_server_and_blob_inspect_verifies_its_blobs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Serve::start(dir.path())?;

    let created = stasis(&server, &["create", "--metadata", "owner=cli"])?;
    assert!(created.status.success(), "{created:?}");
    let id = stdout(&created).trim().to_owned();
    assert!(!id.is_empty());

    let exec = stasis(
        &server,
        &["exec", &id, "--", "echo out; echo err >&2; exit 3"],
    )?;
    assert_eq!(exec.status.code(), Some(3), "{exec:?}");
    assert_eq!(stdout(&exec), "out\n");
    assert_eq!(String::from_utf8_lossy(&exec.stderr), "err\n");
    let words = stasis(&server, &["exec", &id, "--", "echo", "a  b", "it's"])?;
    assert!(words.status.success(), "{words:?}");
    assert_eq!(stdout(&words), "a  b it's\n");
    stasis(&server, &["exec", &id, "--", "echo kept > /tmp/kept"])?;

    let paused = stasis(&server, &["pause", &id])?;
    assert!(paused.status.success(), "{paused:?}");
    let list = stdout(&stasis(&server, &["list"])?);
    let mut lines = list.lines();
    let header = lines.next().context("a header")?;
    for column in ["ID", "TEMPLATE", "STATE", "STARTED", "END", "METADATA"] {
        assert!(header.contains(column), "{list}");
    }
    let row = lines.next().context("a row")?;
    assert!(row.starts_with(&id), "{list}");
    assert!(
        row.contains("base") && row.contains("paused") && row.contains("owner=cli"),
        "{list}"
    );

    // The paused sandbox's blob, inspected offline.
    let blob = dir.path().join("boxes").join(&id).join("state.blob");
    let good = inspect(&blob)?;
    let report = stdout(&good);
    assert!(good.status.success(), "{report}");
    let format = format!(
        "format:      {}.{}",
        stasis::snapshot::FORMAT_MAJOR,
        stasis::snapshot::FORMAT_MINOR
    );
    for expected in [
        format.as_str(),
        "module:      sha256 ",
        "Manifest",
        "Filesystem",
        "verdict:     OK",
    ] {
        assert!(
            report.contains(expected),
            "{expected:?} missing from {report}"
        );
    }
    let mut bytes = std::fs::read(&blob)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    let corrupt_path = dir.path().join("corrupt.blob");
    std::fs::write(&corrupt_path, &bytes)?;
    let corrupt = inspect(&corrupt_path)?;
    assert_eq!(corrupt.status.code(), Some(1));
    assert!(
        stdout(&corrupt).contains("verdict:     INVALID: "),
        "{}",
        stdout(&corrupt)
    );
    std::fs::write(&corrupt_path, b"hello")?;
    let not_a_blob = inspect(&corrupt_path)?;
    assert_eq!(not_a_blob.status.code(), Some(1));
    assert!(stdout(&not_a_blob).contains("INVALID"));

    let resumed = stasis(&server, &["resume", &id])?;
    assert_eq!(stdout(&resumed), format!("resumed {id}\n"));
    assert_eq!(
        stdout(&stasis(&server, &["exec", &id, "--", "cat /tmp/kept"])?),
        "kept\n"
    );
    assert!(stasis(&server, &["kill", &id])?.status.success());
    let gone = stasis(&server, &["pause", &id])?;
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("404"),
        "{gone:?}"
    );
    let list = stdout(&stasis(&server, &["list"])?);
    assert_eq!(list.lines().count(), 1, "{list}");

    let unauthorized = crate::common::stasis_command()
        .args([
            "sandbox",
            "--url",
            &format!("http://{}", server.address),
            "--api-key",
            "wrong",
            "list",
        ])
        .output()?;
    assert_eq!(unauthorized.status.code(), Some(1));
    Ok(())
}
