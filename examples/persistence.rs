//! The seed's persistence flow, in-process: create a sandbox, write `/tmp/message.txt` from the guest, bump
//! a counter kept in guest memory, pause to a blob file, drop everything, resume from the file with a brand
//! new runtime, read the message back and see the counter continue.
//!
//! Run with `cargo run --release --example persistence`. It prints each step and exits non-zero if
//! anything differs from what a paused-and-resumed sandbox must give back.
//!
//! The two halves also run as separate processes, so that the blob can be carried to another machine — of
//! another CPU architecture, as `tests/cross-arch/run.sh` does — between them:
//!
//! ```text
//! persistence pause DIR    # create, write, bump three times, pause to DIR/sandbox.blob (and DIR/memory.sha256)
//! persistence resume DIR   # resume DIR/sandbox.blob with a new runtime, check the memory, message and counter
//! ```

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use stasis::{ResumeOptions, Runtime, RuntimeConfig, SandboxOptions};

/// Name of the blob in a `pause`/`resume` directory.
const BLOB: &str = "sandbox.blob";
/// Name of the file holding the paused memory's sha256 (hex) in a `pause`/`resume` directory.
const DIGEST: &str = "memory.sha256";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => {
            let work = tempfile::tempdir()?;
            let digest = pause(&work.path().join("pause-data"), &work.path().join(BLOB))?;
            resume(
                &work.path().join("resume-data"),
                &work.path().join(BLOB),
                digest,
            )
        }
        ["pause", dir] => {
            let dir = Path::new(dir);
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let work = tempfile::tempdir()?;
            let digest = pause(work.path(), &dir.join(BLOB))?;
            std::fs::write(dir.join(DIGEST), hex::encode(digest))?;
            Ok(())
        }
        ["resume", dir] => {
            let dir = Path::new(dir);
            let hex_digest = std::fs::read_to_string(dir.join(DIGEST))
                .with_context(|| format!("reading {}", dir.join(DIGEST).display()))?;
            let digest: [u8; 32] = hex::decode(hex_digest.trim())?
                .try_into()
                .map_err(|_| anyhow::anyhow!("{DIGEST} is not a sha256"))?;
            let work = tempfile::tempdir()?;
            resume(work.path(), &dir.join(BLOB), digest)
        }
        _ => bail!("usage: persistence [pause DIR | resume DIR]"),
    }
}

/// The first half: a sandbox that wrote a file and counted to three in memory, paused to `blob`. Returns
/// the sha256 of its memory at the pause.
fn pause(data_dir: &Path, blob: &Path) -> Result<[u8; 32]> {
    let wasm = stasis_guests::bytes(stasis_guests::STATEFUL);
    let runtime = Runtime::new(RuntimeConfig::new(data_dir))?;
    let template = runtime.load_template("stateful", &wasm)?;
    let mut sandbox = runtime.create_sandbox(&template, SandboxOptions::default())?;
    println!(
        "created a sandbox from template {} ({}) on {}",
        template.name(),
        template.sha256_hex(),
        std::env::consts::ARCH
    );

    sandbox.call("put_file", b"/tmp/message.txt\nhello")?;
    println!("guest wrote /tmp/message.txt");
    for _ in 0..3 {
        let counter = String::from_utf8(sandbox.call("bump", b"")?)?;
        println!("guest counter: {counter}");
    }
    let digest = sandbox
        .memory_digest(1)
        .context("the guest process is alive")?;
    let report = sandbox.pause(blob)?;
    println!(
        "paused: {} bytes of memory in a {} byte blob, in {:?}",
        report.memory_bytes, report.blob_bytes, report.elapsed
    );
    Ok(digest)
    // The sandbox and the runtime are dropped here: nothing but the blob (and the module cache) remains.
}

/// The second half: resumes `blob` with a new runtime and checks that the memory is `digest`, the file is
/// there and the counter continues from three.
fn resume(data_dir: &Path, blob: &Path, digest: [u8; 32]) -> Result<()> {
    let wasm = stasis_guests::bytes(stasis_guests::STATEFUL);
    let runtime = Runtime::new(RuntimeConfig::new(data_dir))?;
    runtime.load_template("stateful", &wasm)?;
    let started = std::time::Instant::now();
    let mut sandbox = runtime.resume(blob, ResumeOptions::default())?;
    println!(
        "resumed on {} in {:?}",
        std::env::consts::ARCH,
        started.elapsed()
    );
    ensure!(
        sandbox.memory_digest(1) == Some(digest),
        "restored memory differs from the paused memory"
    );

    let message = String::from_utf8(sandbox.call("get_file", b"/tmp/message.txt")?)?;
    println!("guest reads /tmp/message.txt: {message}");
    ensure!(message == "hello", "the message was lost: {message:?}");

    let counter = String::from_utf8(sandbox.call("bump", b"")?)?;
    println!("guest counter: {counter}");
    ensure!(
        counter == "4 4",
        "the counter did not continue: {counter:?}"
    );

    println!("everything the guest had survived the pause");
    Ok(())
}
