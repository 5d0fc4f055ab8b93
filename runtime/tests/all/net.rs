//! The virtual network: guests listening and connecting through the `wasmedge_wasi_socket` crate (the `net`
//! guest program), the host reaching their ports through `Network::connect`, the bounds (backlog,
//! buffers, listeners, connections), the egress policy on real outbound TCP, and a pause: a server blocked
//! in `accept` continues after the resume and accepts again, while a connection open at the pause ends.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use stasis::net::{ConnectError, EgressPolicy};
use stasis::wasi::{OutputSink, Stdin};
use stasis::{CommandIo, HostStream, Runtime, Sandbox, SandboxLimits, SandboxOptions, Template};
use tempfile::TempDir;

use crate::common::runtime_with_limits;

/// A runtime with the `net` program and a sandbox of it.
struct Fixture {
    tmp: TempDir,
    runtime: Runtime,
    net: Template,
    sandbox: Sandbox,
}

/// A server command running on a thread, its stderr collected.
struct Server {
    pid: u32,
    stderr: Arc<Mutex<Vec<u8>>>,
    thread: std::thread::JoinHandle<stasis::CommandOutput>,
}

impl Server {
    /// Waits until its stderr shows `marker`.
    fn wait_stderr(&self, marker: &str) -> Result<String> {
        wait_text(&self.stderr, marker)
    }
}

/// Waits until `collected` shows `marker`.
fn wait_text(collected: &Arc<Mutex<Vec<u8>>>, marker: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen =
            String::from_utf8_lossy(&collected.lock().map(|s| s.clone()).unwrap_or_default())
                .into_owned();
        if seen.contains(marker) {
            return Ok(seen);
        }
        if Instant::now() > deadline {
            bail!("no {marker:?} (so far {seen:?})");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn io(stderr: &Arc<Mutex<Vec<u8>>>) -> CommandIo {
    let sink = stderr.clone();
    CommandIo {
        stdin: Stdin::Empty,
        stdout: OutputSink::capture(1 << 20),
        stderr: OutputSink::stream(1 << 20, move |b| {
            if let Ok(mut s) = sink.lock() {
                s.extend_from_slice(b);
            }
        }),
    }
}

fn args(line: &str) -> Vec<String> {
    line.split_whitespace().map(String::from).collect()
}

impl Fixture {
    fn new() -> Result<Self> {
        Self::with_limits(SandboxLimits::default())
    }

    fn with_limits(limits: SandboxLimits) -> Result<Self> {
        let (tmp, runtime) = runtime_with_limits(limits)?;
        let net = runtime.load_template("net", &stasis_guests::bytes(stasis_guests::NET))?;
        let sandbox = runtime.create_sandbox(&net, SandboxOptions::default())?;
        Ok(Self {
            tmp,
            runtime,
            net,
            sandbox,
        })
    }

    /// Starts `net LINE` on a thread of its own.
    fn start(&mut self, line: &str) -> Result<Server> {
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let command = self
            .sandbox
            .start_command(&self.net, &args(line), &[], io(&stderr))?;
        Ok(Server {
            pid: command.control().pid(),
            stderr,
            thread: std::thread::spawn(move || command.run()),
        })
    }

    /// Runs `net LINE` to its end: (status, stdout).
    fn run(&mut self, line: &str) -> Result<(i32, String)> {
        let out = self.sandbox.run(&self.net, &args(line), b"")?;
        if let Some(trap) = &out.trap {
            bail!("net {line} trapped: {trap}");
        }
        Ok((
            out.exit_code,
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    }
}

/// Waits until a guest of `sandbox` listens on `port`.
fn wait_listening(sandbox: &Sandbox, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sandbox.listening_ports().contains(&port) {
        if Instant::now() > deadline {
            bail!(
                "port {port} never listened (ports: {:?})",
                sandbox.listening_ports()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Sends `data` on a new connection to `port`, ends the sending side and reads the whole answer.
fn exchange(sandbox: &Sandbox, port: u16, data: &[u8]) -> Result<Vec<u8>> {
    let mut stream = sandbox.connect(port)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)));
    stream.write_all(data)?;
    stream.shutdown_write();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(answer)
}

/// A port nothing on the host listens on right now.
fn free_host_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[test]
fn a_host_client_reaches_a_guest_server_and_no_host_port_is_bound() -> Result<()> {
    let mut f = Fixture::new()?;
    let port = free_host_port()?;
    let server = f.start(&format!("echo {port}"))?;
    wait_listening(&f.sandbox, port)?;
    assert_eq!(
        exchange(&f.sandbox, port, b"hello, sandbox")?,
        b"hello, sandbox"
    );
    server.wait_stderr("served 14")?;
    // The guest's port is a routing entry of its sandbox, not a host port.
    ensure!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens on the host's port {port}"
    );
    Ok(())
}

/// Far more than the two 64 KiB buffers hold goes through an echoing guest, the host writing and reading
/// without waiting (`try_write`, `try_read`, `wait_readable`).
#[test]
fn a_large_exchange_moves_through_the_bounded_buffers() -> Result<()> {
    let mut f = Fixture::new()?;
    let server = f.start("echo 9000")?;
    wait_listening(&f.sandbox, 9000)?;
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let stream = f.sandbox.connect(9000)?;
    let (mut sent, mut got) = (0, Vec::with_capacity(data.len()));
    let mut buf = vec![0u8; 32 * 1024];
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < data.len() {
        ensure!(
            Instant::now() < deadline,
            "stuck at {sent} sent, {} back",
            got.len()
        );
        if sent < data.len() {
            match stream.try_write(&data[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
            if sent == data.len() {
                stream.shutdown_write();
            }
        }
        match stream.try_read(&mut buf) {
            Ok(0) => bail!("end of file after {} bytes", got.len()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                stream.wait_readable(Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
        ensure!(stream.pending_to_guest() <= stream.buffer_capacity());
    }
    ensure!(got == data, "the echo differs");
    server.wait_stderr("served 1000000")?;
    Ok(())
}

#[test]
fn an_http_ish_server_answers_many_connections_in_turn_and_at_once() -> Result<()> {
    let mut f = Fixture::new()?;
    let _server = f.start("http 8000")?;
    wait_listening(&f.sandbox, 8000)?;
    for i in 0..40 {
        let answer = exchange(
            &f.sandbox,
            8000,
            format!("GET /{i} HTTP/1.0\r\n\r\n").as_bytes(),
        )?;
        let answer = String::from_utf8(answer)?;
        ensure!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer:?}");
        ensure!(
            answer.ends_with(&format!(
                "hello from port 8000: GET /{i} HTTP/1.0 (peer 127.0.0.1)\n"
            )),
            "{answer:?}"
        );
    }
    // Twenty clients connect before the guest has accepted any: they wait in the backlog, their requests
    // in their buffers.
    let mut streams = Vec::new();
    for i in 0..20 {
        let mut stream = f.sandbox.connect(8000)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)));
        stream.write_all(format!("GET /at-once/{i} HTTP/1.0\r\n\r\n").as_bytes())?;
        streams.push(stream);
    }
    for (i, mut stream) in streams.into_iter().enumerate() {
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        ensure!(
            answer.contains(&format!("GET /at-once/{i} HTTP/1.0")),
            "{answer:?}"
        );
    }
    Ok(())
}

#[test]
fn a_full_backlog_and_an_unlisted_port_are_refused() -> Result<()> {
    let mut f = Fixture::new()?;
    let _server = f.start("backlog 7000 2")?;
    wait_listening(&f.sandbox, 7000)?;
    let _first = f.sandbox.connect(7000)?;
    let _second = f.sandbox.connect(7000)?;
    match f.sandbox.connect(7000) {
        Err(ConnectError::BacklogFull(7000)) => {}
        other => bail!("a third connection: {other:?}"),
    }
    match f.sandbox.connect(7001) {
        Err(ConnectError::NotListening(7001)) => {}
        other => bail!("an unlisted port: {other:?}"),
    }
    Ok(())
}

#[test]
fn connections_are_bounded_per_sandbox() -> Result<()> {
    let mut f = Fixture::with_limits(SandboxLimits {
        max_connections: 3,
        ..SandboxLimits::default()
    })?;
    let _server = f.start("backlog 7000 50")?;
    wait_listening(&f.sandbox, 7000)?;
    let held: Vec<HostStream> = (0..3)
        .map(|_| f.sandbox.connect(7000))
        .collect::<Result<_, _>>()?;
    match f.sandbox.connect(7000) {
        Err(ConnectError::TooManyConnections(3)) => {}
        other => bail!("a fourth connection: {other:?}"),
    }
    assert_eq!(f.sandbox.network().connection_count(), 3);
    drop(held);
    // A connection the host gave up holds its share while it waits in the backlog, for the guest to
    // accept and find ended.
    assert_eq!(f.sandbox.network().connection_count(), 3);
    Ok(())
}

#[test]
fn a_guest_that_never_reads_makes_host_writes_hit_the_bound() -> Result<()> {
    let mut f = Fixture::new()?;
    let _server = f.start("idle 7100")?;
    wait_listening(&f.sandbox, 7100)?;
    let mut stream = f.sandbox.connect(7100)?;
    let chunk = vec![7u8; 8192];
    let mut written = 0;
    loop {
        match stream.try_write(&chunk) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e.into()),
        }
        ensure!(written <= 1 << 20, "writes never stopped");
    }
    assert_eq!(written, 64 * 1024, "exactly the buffer's bound was taken");
    assert_eq!(stream.pending_to_guest(), stream.buffer_capacity());
    stream.set_write_timeout(Some(Duration::from_millis(200)));
    let started = Instant::now();
    let blocked = stream
        .write(&chunk)
        .expect_err("a blocking write waits, then times out");
    assert_eq!(blocked.kind(), std::io::ErrorKind::TimedOut);
    ensure!(started.elapsed() >= Duration::from_millis(200));
    assert!(!stream.wait_writable(Duration::from_millis(50)));
    Ok(())
}

/// A host server on loopback for outbound tests: answers `pong` to whatever one client sends, and
/// reports what it got.
fn pong_server() -> Result<(u16, std::thread::JoinHandle<Vec<u8>>)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let thread = std::thread::spawn(move || {
        let Ok((mut client, _)) = listener.accept() else {
            return Vec::new();
        };
        let mut got = Vec::new();
        let _ = client.read_to_end(&mut got);
        let _ = client.write_all(b"pong");
        got
    });
    Ok((port, thread))
}

#[test]
fn outbound_to_loopback_is_denied_by_default_and_allowed_by_the_policy() -> Result<()> {
    let mut f = Fixture::new()?;
    let (port, server) = pong_server()?;
    // EACCES (2): the default policy denies the host's loopback.
    assert_eq!(
        f.run(&format!("connect 127.0.0.1 {port}"))?,
        (1, "error 2\n".to_owned())
    );
    f.sandbox.set_egress_policy(EgressPolicy {
        allow: vec!["127.0.0.1/32".parse()?],
        ..EgressPolicy::default()
    });
    assert_eq!(
        f.run(&format!("connect 127.0.0.1 {port}"))?,
        (0, "connected, got \"pong\"\n".to_owned())
    );
    assert_eq!(
        server.join().map_err(|_| anyhow::anyhow!("panicked"))?,
        b"ping"
    );
    // Allowed but refused by the host: ECONNREFUSED (14).
    let closed = free_host_port()?;
    assert_eq!(
        f.run(&format!("connect 127.0.0.1 {closed}"))?,
        (1, "error 14\n".to_owned())
    );
    // A deny list entry wins over nothing, and a private address stays denied.
    f.sandbox.set_egress_policy(EgressPolicy::default());
    assert_eq!(f.run("connect 10.0.0.1 80")?, (1, "error 2\n".to_owned()));
    assert_eq!(
        f.run("connect 169.254.169.254 80")?,
        (1, "error 2\n".to_owned())
    );
    Ok(())
}

#[test]
fn a_guest_connects_to_its_own_port_by_address_and_by_name() -> Result<()> {
    let mut f = Fixture::new()?;
    for (port, host) in [(7200, "127.0.0.1"), (7201, "localhost")] {
        let (status, out) = f.run(&format!("self {port} {host}"))?;
        assert_eq!(status, 0, "{out}");
        assert_eq!(
            out,
            format!(
                "server read \"to server\" from 127.0.0.1\nclient read \"to client\"\n\
                 client local 127.0.0.1 peer 127.0.0.1:{port}, server sees it at port true\n"
            )
        );
    }
    Ok(())
}

#[test]
fn listeners_are_bounded_and_a_port_is_listened_on_once() -> Result<()> {
    let mut f = Fixture::with_limits(SandboxLimits {
        max_listeners: 4,
        ..SandboxLimits::default()
    })?;
    // ENFILE (41) past the bound, EADDRINUSE (3) for a port taken.
    assert_eq!(
        f.run("listeners 10")?,
        (0, "listening on 4 then error 41\n".to_owned())
    );
    assert_eq!(
        f.run("listeners 3")?,
        (0, "listening on 3; again: error 3\n".to_owned())
    );
    assert!(
        f.sandbox.listening_ports().is_empty(),
        "closing the fds frees the ports"
    );
    Ok(())
}

#[test]
fn names_resolve_without_dns_for_localhost_and_numbers() -> Result<()> {
    let mut f = Fixture::new()?;
    assert_eq!(f.run("resolve localhost")?.1, "127.0.0.1:80\n");
    assert_eq!(f.run("resolve 10.1.2.3")?.1, "10.1.2.3:80\n");
    // ENOENT (44) for a name no resolver knows (`.invalid` never resolves).
    assert_eq!(f.run("resolve no-such-host.invalid")?.1, "error 44\n");
    Ok(())
}

#[test]
fn socket_options_and_bad_uses_answer_as_the_crate_expects() -> Result<()> {
    let mut f = Fixture::new()?;
    let (status, out) = f.run("options")?;
    assert_eq!(status, 0, "{out}");
    assert_eq!(
        out,
        "reuse before false\nreuse after true\ntimeout Some(1.5s)\nlistener false\nerror Ok(())\n\
         nonblocking false\nnonblocking true\nrecv unconnected: error Err(53)\n\
         peer unconnected: error Err(53)\nlocal unbound Ok(0.0.0.0:0)\nudp: error Err(66)\nbind elsewhere: error Err(4)\n"
    );
    let (status, out) = f.run("nonblock 7500")?;
    assert_eq!(status, 0, "{out}");
    // EAGAIN (6) from an accept with nothing waiting on a non-blocking listener.
    assert_eq!(out, "accept: error 6\nlistening Ok(127.0.0.1:7500)\n");
    Ok(())
}

#[test]
fn a_pause_while_blocked_in_accept_resumes_and_the_listener_accepts_again() -> Result<()> {
    let mut f = Fixture::new()?;
    let server = f.start("echo 7300")?;
    wait_listening(&f.sandbox, 7300)?;
    assert_eq!(exchange(&f.sandbox, 7300, b"before")?, b"before");
    server.wait_stderr("served 6")?;
    // Now it waits in `sock_accept`.
    let network = f.sandbox.network();
    let blob = f.tmp.path().join("accepting.blob");
    assert_eq!(f.sandbox.pause(&blob)?.suspended, 1);
    let output = server
        .thread
        .join()
        .map_err(|_| anyhow::anyhow!("panicked"))?;
    assert!(output.suspended, "{output:?}");
    match network.connect(7300) {
        Err(ConnectError::Closed) => {}
        other => bail!("a connection to a paused sandbox: {other:?}"),
    }
    drop(f.sandbox);
    let mut resumed = f.runtime.resume(&blob, Default::default())?;
    assert_eq!(
        resumed.listening_ports(),
        vec![7300],
        "the port is back at once"
    );
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let command = resumed.continue_command(server.pid, io(&stderr))?;
    let _thread = std::thread::spawn(move || command.run());
    assert_eq!(exchange(&resumed, 7300, b"after")?, b"after");
    Ok(())
}

#[test]
fn a_connection_open_at_the_pause_is_closed_after_the_resume() -> Result<()> {
    let mut f = Fixture::new()?;
    let server = f.start("echo 7400")?;
    wait_listening(&f.sandbox, 7400)?;
    let mut open = f.sandbox.connect(7400)?;
    open.set_read_timeout(Some(Duration::from_secs(30)));
    open.write_all(b"a")?;
    let mut one = [0u8; 1];
    open.read_exact(&mut one)?;
    // The guest waits in `sock_recv` on this connection.
    let blob = f.tmp.path().join("connected.blob");
    assert_eq!(f.sandbox.pause(&blob)?.suspended, 1);
    let mut rest = Vec::new();
    assert_eq!(
        open.read_to_end(&mut rest)?,
        0,
        "the client sees the connection end"
    );
    assert!(open.write_all(b"more").is_err(), "and cannot write into it");
    drop(f.sandbox);
    let mut resumed = f.runtime.resume(&blob, Default::default())?;
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let command = resumed.continue_command(server.pid, io(&stderr))?;
    let _thread = std::thread::spawn(move || command.run());
    // Its re-issued read sees end-of-file: the one byte before the pause was all it served.
    wait_text(&stderr, "served 1")?;
    assert_eq!(exchange(&resumed, 7400, b"again")?, b"again");
    wait_text(&stderr, "served 5")?;
    Ok(())
}

#[test]
fn poll_waits_for_a_connection_and_for_bytes() -> Result<()> {
    let mut f = Fixture::new()?;
    let server = f.start("poll 7600")?;
    wait_listening(&f.sandbox, 7600)?;
    server.wait_stderr("polling")?;
    // Give the guest time to be inside `poll_oneoff` before anything is ready.
    std::thread::sleep(Duration::from_millis(100));
    let mut stream = f.sandbox.connect(7600)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)));
    server.wait_stderr("listener readable")?;
    std::thread::sleep(Duration::from_millis(100));
    stream.write_all(b"xyz")?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    assert_eq!(answer, b"xyz");
    let seen = server.wait_stderr("answered 3")?;
    assert_eq!(
        seen,
        "polling\nlistener readable\nstream readable\nanswered 3\n"
    );
    Ok(())
}

/// Writes a copy of `blob` with its manifest changed by `change`: what a forged blob could hold (a
/// damaged one fails its checksum first).
fn rewrite_blob(
    blob: &std::path::Path,
    out: &std::path::Path,
    change: impl FnOnce(&mut stasis::state::SandboxManifest),
) -> Result<()> {
    let decoded =
        stasis::state::read_sandbox_blob(blob, &stasis::snapshot::DecodeLimits::default())?;
    let mut manifest = decoded.manifest.clone();
    change(&mut manifest);
    let bytes: Vec<Vec<u8>> = decoded
        .memories
        .iter()
        .map(|m| {
            let mut data = vec![0u8; usize::try_from(m.byte_len()).unwrap_or(0)];
            for (offset, run) in m.present_runs() {
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                if let Some(slot) = data.get_mut(start..start + run.len()) {
                    slot.copy_from_slice(run);
                }
            }
            data
        })
        .collect();
    let sections: Vec<stasis::snapshot::MemorySection<'_>> = decoded
        .memories
        .iter()
        .zip(&bytes)
        .map(|(m, data)| stasis::snapshot::MemorySection {
            process: m.process(),
            memory: m.memory(),
            data,
        })
        .collect();
    stasis::snapshot::write_blob_atomic(
        out,
        decoded.header.module_sha256,
        &manifest,
        &sections,
        &decoded.filesystem,
        &stasis::snapshot::EncodeOptions::default(),
    )?;
    Ok(())
}

#[test]
fn the_listening_port_and_the_policy_are_saved_and_a_forged_listener_is_refused() -> Result<()> {
    let mut f = Fixture::new()?;
    let _server = f.start("echo 7700")?;
    wait_listening(&f.sandbox, 7700)?;
    let policy = EgressPolicy {
        allow_internet: false,
        allow: vec!["127.0.0.1/32".parse()?],
        deny: Vec::new(),
    };
    f.sandbox.set_egress_policy(policy.clone());
    let blob = f.tmp.path().join("listening.blob");
    f.sandbox.pause(&blob)?;
    drop(f.sandbox);
    let decoded =
        stasis::state::read_sandbox_blob(&blob, &stasis::snapshot::DecodeLimits::default())?;
    let network = &decoded.manifest.network;
    assert_eq!(network.egress, policy);
    assert_eq!(network.listeners.len(), 1);
    assert_eq!(network.listeners[0].addr.port(), 7700);

    let resumed = f.runtime.resume(&blob, Default::default())?;
    assert_eq!(resumed.egress_policy(), policy);
    assert_eq!(resumed.listening_ports(), vec![7700]);
    drop(resumed);
    let overridden = f.runtime.resume(
        &blob,
        stasis::ResumeOptions {
            egress: Some(EgressPolicy::default()),
            ..Default::default()
        },
    )?;
    assert_eq!(overridden.egress_policy(), EgressPolicy::default());
    drop(overridden);

    // The same port saved twice cannot be listened on twice.
    let twice = f.tmp.path().join("twice.blob");
    rewrite_blob(&blob, &twice, |m| {
        let mut again = m.network.listeners[0].clone();
        again.id += 1000;
        m.network.listeners.push(again);
    })?;
    match f.runtime.resume(&twice, Default::default()) {
        Err(stasis::ResumeError::Listener { port: 7700 }) => {}
        other => bail!("a port saved twice: {:?}", other.map(|_| ())),
    }
    // A listening fd naming a listener the network does not have.
    let missing = f.tmp.path().join("missing.blob");
    rewrite_blob(&blob, &missing, |m| m.network.listeners.clear())?;
    let error = f
        .runtime
        .resume(&missing, Default::default())
        .err()
        .ok_or_else(|| anyhow::anyhow!("an fd of a missing listener was accepted"))?;
    let chain = format!("{:?}", anyhow::Error::from(error));
    ensure!(chain.contains("listens on listener"), "{chain}");
    Ok(())
}

#[test]
fn every_sandbox_resumed_from_a_snapshot_listens_on_its_own() -> Result<()> {
    let mut f = Fixture::new()?;
    let server = f.start("echo 7800")?;
    wait_listening(&f.sandbox, 7800)?;
    let blob = f.tmp.path().join("snapshot.blob");
    f.sandbox
        .snapshot(&blob, &stasis::snapshot::EncodeOptions::default())?;
    // The source keeps serving.
    assert_eq!(exchange(&f.sandbox, 7800, b"source")?, b"source");
    let mut forks = Vec::new();
    for _ in 0..2 {
        let mut fork = f.runtime.resume(&blob, Default::default())?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let command = fork.continue_command(server.pid, io(&stderr))?;
        std::thread::spawn(move || command.run());
        forks.push((fork, stderr));
    }
    for (i, (fork, stderr)) in forks.iter().enumerate() {
        let message = format!("fork {i}");
        assert_eq!(
            exchange(fork, 7800, message.as_bytes())?,
            message.as_bytes()
        );
        wait_text(stderr, &format!("served {}", message.len()))?;
        ensure!(
            !fork.network().same(&f.sandbox.network()),
            "each has a network of its own"
        );
    }
    Ok(())
}

#[test]
fn a_guest_blocked_sending_to_a_client_that_never_reads_is_suspended_and_then_sees_epipe()
-> Result<()> {
    let mut f = Fixture::new()?;
    let server = f.start("flood 7900")?;
    wait_listening(&f.sandbox, 7900)?;
    let client = f.sandbox.connect(7900)?;
    // The guest fills the 64 KiB toward the host and waits in `sock_send` for room.
    server.wait_stderr("sent 65536")?;
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        client.try_read(&mut [0u8; 1])?,
        1,
        "bytes wait for the host"
    );
    let blob = f.tmp.path().join("sending.blob");
    assert_eq!(f.sandbox.pause(&blob)?.suspended, 1);
    drop(f.sandbox);
    let mut resumed = f.runtime.resume(&blob, Default::default())?;
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let command = resumed.continue_command(server.pid, io(&stderr))?;
    let output = command.run();
    assert_eq!(output.exit_code, 0);
    // Its re-issued send finds the connection closed by the pause: EPIPE (64).
    assert_eq!(
        wait_text(&stderr, "flood ended")?,
        "flood ended: error 64\n"
    );
    Ok(())
}
