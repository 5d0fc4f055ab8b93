//! A sandbox paused in one OS process resumes in another: this test binary runs itself again as the child
//! (`child_resumes_a_blob`, a no-op unless the parent sets `STASIS_CHILD_BLOB`), which resumes the blob,
//! reports the restored memory's sha256 and continues the guest's sequence.

use std::process::Command;

use anyhow::{Context, Result, bail};
use stasis::{ResumeOptions, SandboxOptions};

use crate::common::{call, runtime, stateful};

const BLOB_VAR: &str = "STASIS_CHILD_BLOB";
const REPORT_VAR: &str = "STASIS_CHILD_REPORT";

#[test]
fn a_sandbox_paused_here_resumes_in_another_process() -> Result<()> {
    let (tmp, runtime) = runtime()?;
    let mut sandbox = runtime.create_sandbox(&stateful(&runtime)?, SandboxOptions::default())?;
    call(&mut sandbox, "fill", "4 7 random")?;
    for _ in 0..3 {
        call(&mut sandbox, "bump", "")?;
    }
    call(
        &mut sandbox,
        "put_file",
        "/tmp/message.txt\nhello from the parent",
    )?;
    let digest = hex::encode(sandbox.memory_digest(1).context("process 1 is alive")?);
    let blob = tmp.path().join("cross.blob");
    sandbox.pause(&blob)?;
    drop(sandbox);
    drop(runtime);

    let report = tmp.path().join("child-report.txt");
    let status = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "cross_process::child_resumes_a_blob",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(BLOB_VAR, &blob)
        .env(REPORT_VAR, &report)
        .status()?;
    if !status.success() {
        bail!("the child process failed: {status}");
    }
    let lines: Vec<String> = std::fs::read_to_string(&report)?
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        lines,
        [digest, "4 4".to_owned(), "hello from the parent".to_owned()]
    );
    Ok(())
}

/// The child half of the test above; does nothing when run by the ordinary test harness.
#[test]
fn child_resumes_a_blob() -> Result<()> {
    let (Some(blob), Some(report)) = (std::env::var_os(BLOB_VAR), std::env::var_os(REPORT_VAR))
    else {
        return Ok(());
    };
    let (_tmp, runtime) = runtime()?;
    stateful(&runtime)?;
    let mut sandbox = runtime.resume(blob.as_ref(), ResumeOptions::default())?;
    let digest = hex::encode(sandbox.memory_digest(1).context("process 1 was restored")?);
    let next = call(&mut sandbox, "bump", "")?;
    let message = call(&mut sandbox, "get_file", "/tmp/message.txt")?;
    std::fs::write(report, format!("{digest}\n{next}\n{message}\n"))?;
    Ok(())
}
