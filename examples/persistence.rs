//! The seed's persistence flow, in-process: create a sandbox, write `/tmp/message.txt` from the guest, bump
//! a counter kept in guest memory, pause to a blob file, drop everything, resume from the file with a brand
//! new runtime, read the message back and see the counter continue.
//!
//! Run with `cargo run --release --example persistence`. It prints each step and exits non-zero if
//! anything differs from what a paused-and-resumed sandbox must give back.

use anyhow::{Context, Result, ensure};
use stasis::{ResumeOptions, Runtime, RuntimeConfig, SandboxOptions};

fn main() -> Result<()> {
    let work = tempfile::tempdir()?;
    let data_dir = work.path().join("data");
    let blob = work.path().join("sandbox.blob");
    let wasm = stasis_guests::bytes(stasis_guests::STATEFUL);

    let digest = {
        let runtime = Runtime::new(RuntimeConfig::new(&data_dir))?;
        let template = runtime.load_template("stateful", &wasm)?;
        let mut sandbox = runtime.create_sandbox(&template, SandboxOptions::default())?;
        println!(
            "created a sandbox from template {} ({})",
            template.name(),
            template.sha256_hex()
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
        let report = sandbox.pause(&blob)?;
        println!(
            "paused: {} bytes of memory in a {} byte blob, in {:?}",
            report.memory_bytes, report.blob_bytes, report.elapsed
        );
        digest
        // The sandbox and the runtime are dropped here: nothing but the blob (and the module cache) remains.
    };

    let runtime = Runtime::new(RuntimeConfig::new(&data_dir))?;
    runtime.load_template("stateful", &wasm)?;
    let started = std::time::Instant::now();
    let mut sandbox = runtime.resume(&blob, ResumeOptions::default())?;
    println!("resumed in {:?}", started.elapsed());
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
