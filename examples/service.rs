//! A service in a sandbox: the HTTP server of `examples/service` (read its `src/main.rs` first) runs as a
//! command of a sandbox, and the host reaches it through the sandbox's virtual network — no port is bound on
//! the host. Then the sandbox is paused while the service waits for a connection: the port is unreachable
//! while it is paused, and after the resume the same service, with the same hit counter in its memory,
//! answers again.
//!
//! Run with `cargo run --release -p stasis-examples --example service`. It prints each step and exits
//! non-zero if anything differs from what a paused-and-resumed service must give back.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use stasis::net::ConnectError;
use stasis::wasi::{OutputSink, Stdin};
use stasis::{CommandIo, Runtime, RuntimeConfig, Sandbox, SandboxOptions};

/// The port the service listens on inside its sandbox.
const PORT: u16 = 8000;

fn main() -> Result<()> {
    let work = tempfile::tempdir()?;
    let blob = work.path().join("service.blob");
    let wasm = std::fs::read(stasis_examples::SERVICE_GUEST)
        .with_context(|| format!("reading the guest {}", stasis_examples::SERVICE_GUEST))?;
    let runtime = Runtime::new(RuntimeConfig::new(work.path().join("data")))?;
    let template = runtime.load_template("service", &wasm)?;
    let mut sandbox = runtime.create_sandbox(&template, SandboxOptions::default())?;

    // The service runs on a thread of its own, as a background command would.
    let command = sandbox.start_command(&template, &[PORT.to_string()], &[], streams())?;
    let pid = command.control().pid();
    let running = std::thread::spawn(move || command.run());
    wait_listening(&sandbox, PORT)?;
    println!(
        "1. the service listens on port {PORT} of the sandbox's own network (nothing bound on the host)"
    );

    for expected in ["hits 1", "hits 2"] {
        let body = get(&sandbox, "/")?;
        ensure!(body.trim() == expected, "GET / answered {body:?}");
        println!("2. GET / -> {}", body.trim());
    }

    // Paused while it waits in `accept`: the command unwinds and is saved with its counter.
    let network = sandbox.network();
    let report = sandbox.pause(&blob)?;
    let ended = running
        .join()
        .map_err(|_| anyhow::anyhow!("the service's thread panicked"))?;
    ensure!(ended.suspended, "the service was not suspended: {ended:?}");
    println!(
        "3. paused: {} bytes of blob, {} process suspended mid-call",
        report.blob_bytes, report.suspended
    );
    match network.connect(PORT) {
        Err(ConnectError::Closed) => {
            println!("4. while paused, a connection is refused: the sandbox is paused")
        }
        other => bail!("a connection to the paused sandbox: {other:?}"),
    }
    drop(sandbox);

    let mut resumed = runtime.resume(&blob, Default::default())?;
    ensure!(
        resumed.listening_ports() == vec![PORT],
        "the port is not back after the resume: {:?}",
        resumed.listening_ports()
    );
    let command = resumed.continue_command(pid, streams())?;
    let running = std::thread::spawn(move || command.run());
    let body = get(&resumed, "/")?;
    ensure!(
        body.trim() == "hits 3",
        "after the resume GET / answered {body:?}, not the next count"
    );
    println!(
        "5. resumed: GET / -> {} (the counter kept its value)",
        body.trim()
    );

    ensure!(get(&resumed, "/bye")?.trim() == "bye");
    let ended = running
        .join()
        .map_err(|_| anyhow::anyhow!("the service's thread panicked"))?;
    ensure!(
        ended.exit_code == 0 && !ended.suspended,
        "the service did not end well: {ended:?}"
    );
    println!("6. GET /bye ended the service with status 0");
    Ok(())
}

/// The service's streams: no stdin, its messages collected (and dropped).
fn streams() -> CommandIo {
    CommandIo {
        stdin: Stdin::Empty,
        stdout: OutputSink::capture(1 << 16),
        stderr: OutputSink::capture(1 << 16),
    }
}

/// Waits until a process of `sandbox` listens on `port`.
fn wait_listening(sandbox: &Sandbox, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sandbox.listening_ports().contains(&port) {
        if Instant::now() > deadline {
            bail!("the service never listened on port {port}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// `GET path` over a new connection to the service; returns the response's body.
fn get(sandbox: &Sandbox, path: &str) -> Result<String> {
    let mut stream = sandbox.connect(PORT)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)));
    write!(stream, "GET {path} HTTP/1.1\r\nHost: service\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8(response).context("the response is not text")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("not an HTTP response: {text:?}"))?;
    ensure!(head.starts_with("HTTP/1.1 200"), "answered {head:?}");
    Ok(body.to_owned())
}
