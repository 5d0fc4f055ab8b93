//! A guest service under load: many clients at once send `GET /` to the HTTP service of `examples/service`
//! running in a sandbox, through the sandbox's virtual network (`Sandbox::connect`, what the server's
//! routing to a sandbox's port builds on), for a bounded time. The reference in the same run is the same
//! service written for the host — the same loop answering one connection at a time, over loopback TCP —
//! driven by the same clients: what the sandbox's network and the wasm guest add, not the service's design.
//!
//! The same load is then sent through a Stasis server started in this process, to the service's port by
//! the path form of its routing (`/sandboxes/<id>/ports/8000/`): what a client outside the machine's
//! process goes through.
//!
//! Every request must be answered (`hits N`); a failure ends the bench with an error rather than a figure.
//! A connect that finds the listener's backlog full is tried again after a millisecond, as a host's TCP
//! retries a SYN the listener had no room for; that wait is part of the request's latency.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::json;
use stasis::wasi::{OutputSink, Stdin};
use stasis::{CommandIo, SandboxOptions};

use crate::scenarios::Bench;
use crate::stats::{Measurement, ms};

/// The service's port inside its sandbox.
const PORT: u16 = 8000;

/// A connection to the service under test: the sandbox's network or loopback TCP.
trait Dial: Send + Sync {
    /// One `GET /` on a new connection; the whole response.
    fn get(&self) -> Result<Vec<u8>>;
}

/// The service in a sandbox, reached through its virtual network.
struct InSandbox(stasis::Network);

impl Dial for InSandbox {
    fn get(&self) -> Result<Vec<u8>> {
        // A full backlog is the virtual network's push-back (a host's TCP would hold the SYN and retry):
        // the client tries again, and the wait counts in its request's latency.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut stream = loop {
            match self.0.connect(PORT) {
                Err(stasis::ConnectError::BacklogFull(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                other => break other?,
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(30)));
        stream.write_all(b"GET / HTTP/1.1\r\nHost: service\r\n\r\n")?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        Ok(response)
    }
}

/// The host-native reference, on loopback.
struct OnHost(std::net::SocketAddr);

impl Dial for OnHost {
    fn get(&self) -> Result<Vec<u8>> {
        let mut stream = std::net::TcpStream::connect(self.0)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.write_all(b"GET / HTTP/1.1\r\nHost: service\r\n\r\n")?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        Ok(response)
    }
}

/// The host twin of `examples/service`: answers each connection in turn with its hit count.
fn host_service(listener: std::net::TcpListener, stop: Arc<AtomicBool>) {
    let mut hits: u64 = 0;
    for stream in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut stream) = stream else { continue };
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        hits += 1;
        let body = format!("hits {hits}\n");
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

/// `clients` threads sending requests through `dial` for `secs` seconds: every request's latency in ms.
fn drive(dial: Arc<dyn Dial>, clients: usize, secs: f64) -> Result<Vec<f64>> {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (dial, latencies, failures) = (dial.clone(), latencies.clone(), failures.clone());
            std::thread::spawn(move || {
                while Instant::now() < until {
                    let started = Instant::now();
                    match dial.get() {
                        Ok(response) if response.starts_with(b"HTTP/1.1 200") => {
                            if let Ok(mut l) = latencies.lock() {
                                l.push(ms(started.elapsed()));
                            }
                        }
                        Ok(response) => {
                            if let Ok(mut f) = failures.lock() {
                                f.push(format!(
                                    "answered {:?}",
                                    String::from_utf8_lossy(&response)
                                ));
                            }
                        }
                        Err(error) => {
                            if let Ok(mut f) = failures.lock() {
                                f.push(format!("{error:#}"));
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
    }
    let failures = failures.lock().map(|f| f.clone()).unwrap_or_default();
    if let Some(first) = failures.first() {
        bail!(
            "{} of the requests failed; the first: {first}",
            failures.len()
        );
    }
    let latencies = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    ensure!(!latencies.is_empty(), "no request was answered");
    Ok(latencies)
}

/// The rows: request latency through the sandbox's network, against the host-native service, and the
/// requests answered per second of each.
pub fn load(bench: &Bench, clients: usize, secs: f64) -> Result<Vec<Measurement>> {
    let wasm = stasis_guests::bytes(stasis_guests::SERVICE);
    let template = bench.runtime.load_template("service", &wasm)?;
    let mut sandbox = bench
        .runtime
        .create_sandbox(&template, SandboxOptions::default())?;
    let io = CommandIo {
        stdin: Stdin::Empty,
        stdout: OutputSink::discard(),
        stderr: OutputSink::discard(),
    };
    let command = sandbox.start_command(&template, &[PORT.to_string()], &[], io)?;
    let control = command.control();
    let running = std::thread::spawn(move || command.run());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sandbox.listening_ports().contains(&PORT) {
        ensure!(Instant::now() < deadline, "the service never listened");
        std::thread::sleep(Duration::from_millis(5));
    }
    let in_sandbox = drive(Arc::new(InSandbox(sandbox.network())), clients, secs)
        .context("the service in a sandbox")?;
    control.stop(stasis::wasi::StopReason::Kill);
    running
        .join()
        .map_err(|_| anyhow::anyhow!("the service's thread panicked"))?;

    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let host = {
        let stop = stop.clone();
        std::thread::spawn(move || host_service(listener, stop))
    };
    let on_host =
        drive(Arc::new(OnHost(address)), clients, secs).context("the host-native service")?;
    stop.store(true, Ordering::Relaxed);
    // One more connection wakes the accept loop to see the stop.
    let _ = std::net::TcpStream::connect(address);
    let _ = host.join();

    let reference = Measurement::new("", json!({}), "ms", on_host.clone()).median;
    let rate = |samples: &[f64]| samples.len() as f64 / secs;
    let parameters = json!({ "clients": clients, "seconds": secs, "service": "examples/service" });
    Ok(vec![
        Measurement::new(
            "guest service under load (request latency)",
            parameters.clone(),
            "ms",
            in_sandbox.clone(),
        )
        .against("the same service on the host", reference),
        Measurement::new(
            "guest service under load (requests answered per second)",
            parameters,
            "req/s",
            vec![rate(&in_sandbox)],
        )
        .against("the same service on the host", rate(&on_host)),
    ])
}

/// The service of a sandbox of `server`, reached through the server's routing to its port (the path form,
/// on a new connection each time, as a browser without keep-alive would).
struct ThroughProxy {
    server: crate::http::Server,
    path: String,
}

impl Dial for ThroughProxy {
    fn get(&self) -> Result<Vec<u8>> {
        let (status, _, body) = self.server.get(&self.path)?;
        ensure!(
            status == 200,
            "answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        // The same check as for the other dials: a whole response that says it succeeded.
        let mut response = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        response.extend_from_slice(&body);
        Ok(response)
    }
}

/// The rows of the same load sent through a Stasis server's routing to the service's port: what the
/// server adds (HTTP parsing, the sandbox lookup, forwarding over the virtual network) to the two above.
pub fn load_through_server(
    work: &std::path::Path,
    clients: usize,
    secs: f64,
) -> Result<Vec<Measurement>> {
    let server = crate::http::Server::start_with(
        &work.join("proxy-load"),
        stasis::lifecycle::ManagerConfig::default(),
        None,
    )?;
    server.register_template("service", &stasis_guests::bytes(stasis_guests::SERVICE))?;
    let (id, token) = server.create_sandbox()?;
    // A program started in the background outlives the command that started it.
    server.run_command(&id, &token, &format!("service {PORT} &"))?;
    let path = format!("/sandboxes/{id}/ports/{PORT}/");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, _) = server.get(&path)?;
        if status == 200 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the service never answered through the server ({status})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let samples = drive(Arc::new(ThroughProxy { server, path }), clients, secs)
        .context("the service through the server")?;
    let parameters = json!({ "clients": clients, "seconds": secs, "service": "examples/service", "via": "server" });
    Ok(vec![
        Measurement::new(
            "guest service under load through the server (request latency)",
            parameters.clone(),
            "ms",
            samples.clone(),
        ),
        Measurement::new(
            "guest service under load through the server (requests answered per second)",
            parameters,
            "req/s",
            vec![samples.len() as f64 / secs],
        ),
    ])
}
