//! The load scenario: many concurrent clients on loopback, each looping create → command (`echo hi`
//! through `/process.Process/Start`) → pause → resume (connect) → kill against one server until a
//! deadline. Reports the latency of each operation and the total throughput, and counts errors: any
//! transport failure or unexpected status is one, and a run with errors fails the harness.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::json;

use crate::http::Server;
use crate::stats::{Measurement, ms};

/// The operations of one client cycle, in order.
const OPERATIONS: [&str; 5] = ["create", "command", "pause", "resume", "kill"];

/// What the load run is asked to do.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Concurrent clients, each with at most one sandbox at a time.
    pub clients: usize,
    /// How long clients start new cycles; a cycle under way when it ends is finished.
    pub duration: Duration,
}

/// What a load run measured.
#[derive(Debug)]
pub struct LoadOutcome {
    /// One latency row per operation, then throughput and error rows.
    pub measurements: Vec<Measurement>,
    /// The number of failed requests.
    pub errors: usize,
    /// Up to ten distinct error messages, for the log.
    pub first_errors: Vec<String>,
}

/// What one client saw.
#[derive(Default)]
struct ClientLog {
    /// Milliseconds per operation, in the order of [`OPERATIONS`].
    latencies: [Vec<f64>; 5],
    cycles: usize,
    errors: Vec<String>,
}

/// Runs `options.clients` clients against `server` for `options.duration`.
pub fn run(server: &Server, options: &LoadOptions) -> Result<LoadOutcome> {
    let started = Instant::now();
    let deadline = started + options.duration;
    let logs: Vec<ClientLog> = std::thread::scope(|scope| -> Result<Vec<ClientLog>> {
        let mut handles = Vec::with_capacity(options.clients);
        for n in 0..options.clients {
            let handle = std::thread::Builder::new()
                .name(format!("load-client-{n}"))
                // Blocking I/O and small buffers only: 200 default 8 MiB stacks would be mostly waste.
                .stack_size(256 << 10)
                .spawn_scoped(scope, move || client(server, deadline))?;
            handles.push(handle);
        }
        Ok(handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| ClientLog {
                    errors: vec!["a client thread panicked".into()],
                    ..ClientLog::default()
                })
            })
            .collect())
    })?;
    let elapsed = started.elapsed();

    let mut latencies: [Vec<f64>; 5] = Default::default();
    let mut cycles = 0;
    let mut errors = Vec::new();
    for log in logs {
        for (all, mine) in latencies.iter_mut().zip(log.latencies) {
            all.extend(mine);
        }
        cycles += log.cycles;
        errors.extend(log.errors);
    }
    let requests: usize = latencies.iter().map(Vec::len).sum();
    let params = |op: &str| json!({ "op": op, "clients": options.clients });
    let mut measurements: Vec<Measurement> = OPERATIONS
        .iter()
        .zip(latencies)
        .filter(|(_, samples)| !samples.is_empty())
        .map(|(op, samples)| Measurement::new("load", params(op), "ms", samples))
        .collect();
    let seconds = elapsed.as_secs_f64();
    measurements.push(Measurement::new(
        "load throughput",
        json!({ "clients": options.clients, "requests": requests, "secs": seconds.round() }),
        "req/s",
        vec![requests as f64 / seconds],
    ));
    measurements.push(Measurement::new(
        "load throughput",
        json!({ "clients": options.clients, "cycles": cycles, "secs": seconds.round() }),
        "cycles/s",
        vec![cycles as f64 / seconds],
    ));
    measurements.push(Measurement::new(
        "load errors",
        json!({ "clients": options.clients, "requests": requests + errors.len() }),
        "count",
        vec![errors.len() as f64],
    ));
    let mut distinct: BTreeMap<&str, usize> = BTreeMap::new();
    for error in &errors {
        *distinct.entry(error.as_str()).or_default() += 1;
    }
    let first_errors = distinct
        .iter()
        .take(10)
        .map(|(message, count)| format!("{count}× {message}"))
        .collect();
    Ok(LoadOutcome {
        measurements,
        errors: errors.len(),
        first_errors,
    })
}

/// One client: whole cycles until `deadline`. A failed step ends its cycle; the sandbox, if any, is
/// killed (best effort, uncounted) so a failure does not leave sandboxes behind to skew the rest.
fn client(server: &Server, deadline: Instant) -> ClientLog {
    let mut log = ClientLog::default();
    while Instant::now() < deadline {
        let mut sandbox = None;
        match cycle(server, &mut log, &mut sandbox) {
            Ok(()) => log.cycles += 1,
            Err(error) => {
                log.errors.push(format!("{error:#}"));
                if let Some(id) = sandbox {
                    let _ = server.kill(&id);
                }
            }
        }
    }
    log
}

/// create → command → pause → resume → kill, each timed; `sandbox` holds the id until it is killed.
fn cycle(server: &Server, log: &mut ClientLog, sandbox: &mut Option<String>) -> Result<()> {
    let timed = |log: &mut ClientLog, op: usize, started: Instant| {
        log.latencies[op].push(ms(started.elapsed()));
    };
    let started = Instant::now();
    let (id, token) = server.create_sandbox()?;
    timed(log, 0, started);
    *sandbox = Some(id.clone());

    let started = Instant::now();
    let reply = server.run_command(&id, &token, "echo hi")?;
    // "hi\n" in base64, inside the stdout data event; an end-of-stream error would lack it.
    if !reply.windows(4).any(|w| w == b"aGkK") {
        bail!(
            "command: no `hi` in the reply: {}",
            String::from_utf8_lossy(&reply)
        );
    }
    timed(log, 1, started);

    let started = Instant::now();
    server.pause(&id)?;
    timed(log, 2, started);

    let started = Instant::now();
    server.resume(&id)?;
    timed(log, 3, started);

    let started = Instant::now();
    server.kill(&id)?;
    timed(log, 4, started);
    *sandbox = None;
    Ok(())
}
