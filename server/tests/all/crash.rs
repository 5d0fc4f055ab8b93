//! Crash consistency of `stasis serve`: the real binary is killed with SIGKILL at random instants (many of
//! them while a pause is in flight), restarted on the same data directory, and every sandbox is checked
//! against a model of what the server acknowledged:
//!
//! - a sandbox whose pause was acknowledged (204) is paused and resumes (201) with exactly the files written
//!   before that pause;
//! - a sandbox caught mid-pause or mid-resume is either paused with every acknowledged write or reported
//!   `lost`; a sandbox that was running is `lost`; none is ever silently dropped (404 only once killed);
//! - a resumed sandbox never shows data that was not written (a half-written blob is never accepted);
//! - nothing outside the data directory is touched;
//! - the store is large: before the first crash point it gets `STASIS_CRASH_BYSTANDERS` (2,000 by
//!   default) paused bystanders, copies of one real paused sandbox made cheaply (its blob hard-linked,
//!   its record rewritten with a new id) and found by the index's rebuild at the first start; every
//!   tenth restart, and the last, must list every one of them, paused, and some resume at the end with
//!   their files. The servers compact the index's journal every few changes, so kills land in
//!   compactions too.
//!
//! `STASIS_CRASH_POINTS` sets how many kills (100 by default, about 35 s: the CI budget; see `docs/reliability.md` for
//! the ≥ 1,000-point run), `STASIS_CRASH_SEED` replays a failing run: the seed is in every failure message.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::common::envelope;

const KEY: &str = "k";
/// Most sandboxes alive at once: enough to have bystanders of every kill, few enough to keep restarts fast.
const MAX_LIVE: usize = 3;
/// How often the servers compact the index's journal: every few changes, so that some kills land in a
/// compaction (with the bystanders, each one writes a snapshot of thousands of records).
const COMPACT_EVERY: &str = "8";

/// A small deterministic generator (splitmix64), so a failing seed replays the same schedule without a
/// dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is irrelevant here.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One `stasis serve`, killable from another thread at any instant.
struct Server {
    child: Arc<Mutex<Child>>,
    address: String,
}

impl Server {
    fn start(data_dir: &Path, tmp_dir: &Path) -> Result<Self> {
        let mut child = crate::common::stasis_command()
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--api-key",
                KEY,
                "--data-dir",
            ])
            .arg(data_dir)
            // Anything the server puts in the temp dir lands here, where the test can see it.
            .env("TMPDIR", tmp_dir)
            .env("STASIS_COMPACT_JOURNAL_AFTER", COMPACT_EVERY)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let address = loop {
            let Some(line) = lines.next() else {
                bail!("stasis serve exited before listening: {:?}", child.wait()?)
            };
            if let Some(address) = line?.strip_prefix("stasis listening on http://") {
                break address.to_owned();
            }
        };
        // Keep draining stdout so a later line never blocks or breaks the server.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Self {
            child: Arc::new(Mutex::new(child)),
            address,
        })
    }

    /// SIGKILLs the server after `delay`, from another thread, while this one keeps sending requests.
    fn kill_after(&self, delay: Duration) -> JoinHandle<()> {
        let child = self.child.clone();
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            let mut child = child.lock().expect("child lock");
            // `Child::kill` is SIGKILL on Unix: no graceful shutdown, no pause of running sandboxes.
            let _ = child.kill();
            let _ = child.wait();
        })
    }

    fn is_dead(&self) -> bool {
        matches!(
            self.child.lock().expect("child lock").try_wait(),
            Ok(Some(_))
        )
    }

    /// One HTTP/1.1 request. `Err` means no complete response arrived (the server died under it).
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(u16, Vec<u8>)> {
        let (status, _, body) = self.exchange(method, path, headers, body)?;
        Ok((status, body))
    }

    /// A control-plane request without a body: the status, the response's head and its body.
    fn request_with_head(&self, method: &str, path: &str) -> Result<(u16, String, Vec<u8>)> {
        self.exchange(method, path, &[("X-API-KEY", KEY)], b"")
    }

    /// [`Server::request`], the response's head too.
    fn exchange(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(u16, String, Vec<u8>)> {
        let mut stream = TcpStream::connect(&self.address)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.address,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let (status, body) = parse_response(&response)?;
        let head_end = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(0);
        Ok((
            status,
            String::from_utf8_lossy(&response[..head_end]).into_owned(),
            body,
        ))
    }

    fn api(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Vec<u8>)> {
        let body = body.map(Value::to_string).unwrap_or_default();
        self.request(
            method,
            path,
            &[("X-API-KEY", KEY), ("Content-Type", "application/json")],
            body.as_bytes(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failed test must not leave its server behind.
        if let Ok(mut child) = self.child.lock() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Splits a complete HTTP/1.1 response into status and body, undoing chunked encoding. A response cut
/// short by the kill is an error, never a partial body, so it can never count as an acknowledgement.
fn parse_response(bytes: &[u8]) -> Result<(u16, Vec<u8>)> {
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("incomplete response head")?;
    let head = std::str::from_utf8(&bytes[..split])?;
    let mut body = &bytes[split + 4..];
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("status line")?;
    let header = |name: &str| {
        head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut out = Vec::new();
        loop {
            let line_end = body
                .windows(2)
                .position(|w| w == b"\r\n")
                .context("incomplete chunk size")?;
            let size_text = std::str::from_utf8(&body[..line_end])?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
            body = &body[line_end + 2..];
            if size == 0 {
                return Ok((status, out));
            }
            ensure!(body.len() >= size + 2, "incomplete chunk");
            out.extend_from_slice(&body[..size]);
            body = &body[size + 2..];
        }
    }
    if let Some(length) = header("content-length") {
        let length: usize = length.parse()?;
        ensure!(body.len() >= length, "incomplete body");
        return Ok((status, body[..length].to_vec()));
    }
    Ok((status, body.to_vec()))
}

/// The sandboxes listed: the first page only when `first_page`, else every page.
fn list(server: &Server, first_page: bool) -> Result<Vec<Value>> {
    let mut listed = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let path = match &token {
            Some(t) => format!("/v2/sandboxes?state=running,paused,lost&limit=100&nextToken={t}"),
            None => "/v2/sandboxes?state=running,paused,lost&limit=100".to_owned(),
        };
        let (status, head, body) = server.request_with_head("GET", &path)?;
        ensure!(status == 200, "list: {status}");
        listed.extend(serde_json::from_slice::<Vec<Value>>(&body)?);
        token = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("x-next-token")
                .then(|| value.trim().to_owned())
        });
        if token.is_none() || first_page {
            return Ok(listed);
        }
    }
}

/// Splits a Connect stream into (flags, JSON) envelopes; `Err` if truncated.
fn envelopes(mut body: &[u8]) -> Result<Vec<(u8, Value)>> {
    let mut out = Vec::new();
    while !body.is_empty() {
        ensure!(body.len() >= 5, "truncated envelope header");
        let length = u32::from_be_bytes(body[1..5].try_into()?) as usize;
        ensure!(body.len() >= 5 + length, "truncated envelope");
        out.push((body[0], serde_json::from_slice(&body[5..5 + length])?));
        body = &body[5 + length..];
    }
    Ok(out)
}

/// The request in flight on a sandbox when the server may have been killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InFlight {
    None,
    Write,
    Pause,
    Connect,
    Kill,
}

/// What the server acknowledged about one sandbox.
#[derive(Debug)]
struct Model {
    token: String,
    /// Acknowledged writes, in order: the lines `/tmp/log` must hold.
    log: Vec<u64>,
    /// Whether the last acknowledged transition left it paused.
    paused: bool,
    /// The request that got no complete response.
    in_flight: InFlight,
}

/// One crash-consistency run: the seed, the live server, the model.
struct Run {
    rng: Rng,
    seed: u64,
    data_dir: PathBuf,
    tmp_dir: PathBuf,
    boxes: BTreeMap<String, Model>,
    next_line: u64,
    /// Running estimate of an acknowledged pause's duration, to aim kills into pauses.
    pause_ms: f64,
    /// What happened, for the summary.
    stats: Stats,
    /// Paused sandboxes made before the first crash point, never touched until the end.
    bystanders: BTreeSet<String>,
    /// What `/tmp/log` of every bystander holds.
    bystander_log: Vec<u64>,
}

#[derive(Debug, Default)]
struct Stats {
    kills: usize,
    kills_during_pause: usize,
    acked_pauses_verified: usize,
    unacked_recovered_paused: usize,
    reported_lost: usize,
    /// Temp files of interrupted atomic writes still in the data dir at the end: harmless to
    /// correctness (never renamed into place) but disk that nothing reclaims.
    stray_temp_files: Vec<PathBuf>,
}

fn envd_headers<'a>(id: &'a str, token: &'a str) -> [(&'a str, &'a str); 3] {
    [
        ("E2b-Sandbox-Id", id),
        ("X-Access-Token", token),
        ("Content-Type", "application/connect+json"),
    ]
}

impl Run {
    fn create(&mut self, server: &Server) -> Result<Option<String>> {
        let Ok((status, body)) = server.api(
            "POST",
            "/v2/sandboxes",
            Some(&json!({"templateID": "base"})),
        ) else {
            return Ok(None);
        };
        ensure!(
            status == 201,
            "create: {status} {}",
            String::from_utf8_lossy(&body)
        );
        let json: Value = serde_json::from_slice(&body)?;
        let id = json["sandboxID"].as_str().context("sandboxID")?.to_owned();
        let token = json["envdAccessToken"]
            .as_str()
            .context("envdAccessToken")?
            .to_owned();
        self.boxes.insert(
            id.clone(),
            Model {
                token,
                log: Vec::new(),
                paused: false,
                in_flight: InFlight::None,
            },
        );
        Ok(Some(id))
    }

    /// Appends the next line to `/tmp/log` with a command; `false` if the server died first.
    fn write(&mut self, server: &Server, id: &str) -> Result<bool> {
        let line = self.next_line;
        self.next_line += 1;
        let model = self.boxes.get_mut(id).context("model")?;
        model.in_flight = InFlight::Write;
        let message = json!({
            "process": {"cmd": "/bin/sh", "args": ["-c", format!("echo {line} >> /tmp/log")], "envs": {}},
            "stdin": false,
        });
        let reply = server.request(
            "POST",
            "/process.Process/Start",
            &envd_headers(id, &model.token),
            &envelope(0, message.to_string().as_bytes()),
        );
        let Ok((status, body)) = reply else {
            return Ok(false);
        };
        let Ok(events) = envelopes(&body) else {
            return Ok(false);
        };
        ensure!(status == 200, "start on {id}: {status} {events:?}");
        // The stream ends with an end-of-stream envelope (flags 2); only then is the command acknowledged.
        match events.last() {
            Some((2, trailer)) if trailer.get("error").is_none() => {}
            _ if server.is_dead() => return Ok(false),
            _ => bail!("start on {id} did not end cleanly: {events:?}"),
        }
        let end = events
            .iter()
            .find_map(|(_, e)| e["event"].get("end"))
            .with_context(|| format!("no end event: {events:?}"))?;
        ensure!(end["exitCode"] == 0, "echo failed on {id}: {events:?}");
        model.log.push(line);
        model.in_flight = InFlight::None;
        Ok(true)
    }

    fn pause(&mut self, server: &Server, id: &str) -> Result<bool> {
        self.boxes.get_mut(id).context("model")?.in_flight = InFlight::Pause;
        let started = Instant::now();
        let Ok((status, body)) = server.api("POST", &format!("/sandboxes/{id}/pause"), None) else {
            return Ok(false);
        };
        ensure!(
            status == 204,
            "pause {id}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        self.pause_ms = 0.8 * self.pause_ms + 0.2 * started.elapsed().as_secs_f64() * 1e3;
        let model = self.boxes.get_mut(id).context("model")?;
        model.paused = true;
        model.in_flight = InFlight::None;
        Ok(true)
    }

    fn connect(&mut self, server: &Server, id: &str) -> Result<bool> {
        self.boxes.get_mut(id).context("model")?.in_flight = InFlight::Connect;
        let Ok((status, body)) = server.api(
            "POST",
            &format!("/sandboxes/{id}/connect"),
            Some(&json!({})),
        ) else {
            return Ok(false);
        };
        ensure!(
            status == 201,
            "connect {id}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        let model = self.boxes.get_mut(id).context("model")?;
        model.paused = false;
        model.in_flight = InFlight::None;
        Ok(true)
    }

    fn kill(&mut self, server: &Server, id: &str) -> Result<bool> {
        self.boxes.get_mut(id).context("model")?.in_flight = InFlight::Kill;
        let Ok((status, body)) = server.api("DELETE", &format!("/sandboxes/{id}"), None) else {
            return Ok(false);
        };
        ensure!(
            status == 204,
            "kill {id}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        self.boxes.remove(id);
        Ok(true)
    }

    /// The contents of `/tmp/log` of a running sandbox, as numbers.
    fn read_log(&self, server: &Server, id: &str) -> Result<Vec<u64>> {
        let model = &self.boxes[id];
        let (status, body) = server.request(
            "GET",
            "/files?path=/tmp/log",
            &envd_headers(id, &model.token)[..2],
            b"",
        )?;
        if status == 404 && model.log.is_empty() {
            return Ok(Vec::new());
        }
        ensure!(status == 200, "download /tmp/log of {id}: {status}");
        let text = String::from_utf8(body).context("/tmp/log is not UTF-8: corrupt data")?;
        text.lines()
            .map(|l| {
                l.parse()
                    .with_context(|| format!("corrupt line {l:?} in /tmp/log of {id}"))
            })
            .collect()
    }

    /// After a restart: every sandbox of the model is where its acknowledgements say, and paused ones come
    /// back with exactly their acknowledged files. Leaves every surviving sandbox running.
    fn verify(&mut self, server: &Server, all_bystanders: bool) -> Result<()> {
        // The model's sandboxes sort before the bystanders, on the first page.
        let listed = list(server, !all_bystanders)?;
        if all_bystanders {
            let bystanders: BTreeSet<String> = listed
                .iter()
                .filter(|s| s["metadata"]["bystander"] == "yes")
                .map(|s| {
                    ensure!(s["state"] == "paused", "bystander {s} is not paused");
                    Ok(s["sandboxID"].as_str().context("sandboxID")?.to_owned())
                })
                .collect::<Result<_>>()?;
            if bystanders != self.bystanders {
                let lost: Vec<_> = self.bystanders.difference(&bystanders).collect();
                let extra: Vec<_> = bystanders.difference(&self.bystanders).collect();
                bail!("LOSS: bystanders missing {lost:?}, unknown {extra:?}");
            }
        }
        let ids: Vec<String> = self.boxes.keys().cloned().collect();
        for id in ids {
            let model = &self.boxes[&id];
            let (status, body) = server.api("GET", &format!("/sandboxes/{id}"), None)?;
            if status == 404 {
                ensure!(
                    model.in_flight == InFlight::Kill,
                    "sandbox {id} silently dropped (404) though never killed; model {model:?}"
                );
                self.boxes.remove(&id);
                continue;
            }
            ensure!(status == 200, "info {id}: {status}");
            let info: Value = serde_json::from_slice(&body)?;
            let state = info["state"].as_str().context("state")?.to_owned();
            ensure!(
                listed
                    .iter()
                    .any(|s| s["sandboxID"] == id.as_str() && s["state"] == state.as_str()),
                "sandbox {id} ({state}) missing from the listing"
            );
            // Which outcomes the acknowledgements allow.
            let must_be_paused = model.paused && model.in_flight == InFlight::None;
            let may_be_paused = model.paused || model.in_flight == InFlight::Pause;
            match state.as_str() {
                "lost" => {
                    ensure!(
                        !must_be_paused,
                        "LOSS: acknowledged pause of {id} came back lost; model {model:?}"
                    );
                    self.stats.reported_lost += 1;
                    let (status, _) = server.api("DELETE", &format!("/sandboxes/{id}"), None)?;
                    ensure!(status == 204, "kill lost {id}: {status}");
                    self.boxes.remove(&id);
                }
                "paused" => {
                    ensure!(
                        may_be_paused || model.in_flight == InFlight::Kill,
                        "sandbox {id} came back paused though it was running; model {model:?}"
                    );
                    let expected = model.log.clone();
                    let (status, body) = server.api(
                        "POST",
                        &format!("/sandboxes/{id}/connect"),
                        Some(&json!({})),
                    )?;
                    ensure!(
                        status == 201,
                        "paused {id} does not resume: {status} {}; model {model:?}",
                        String::from_utf8_lossy(&body)
                    );
                    let found = self.read_log(server, &id)?;
                    ensure!(
                        found == expected,
                        "resumed {id} has /tmp/log {found:?}, acknowledged {expected:?}"
                    );
                    if must_be_paused {
                        self.stats.acked_pauses_verified += 1;
                    } else {
                        self.stats.unacked_recovered_paused += 1;
                    }
                    let model = self.boxes.get_mut(&id).context("model")?;
                    model.paused = false;
                    model.in_flight = InFlight::None;
                }
                other => bail!("sandbox {id} is {other:?} right after a restart; model {model:?}"),
            }
        }
        Ok(())
    }

    /// Drives sandboxes until the armed kill lands. Half the crash points aim into a pause: a write, then
    /// the pause request with the kill 0–1.5× a pause's duration after it.
    fn crash_point(&mut self, server: &Server) -> Result<()> {
        while self.boxes.len() < MAX_LIVE && (self.boxes.is_empty() || self.rng.below(2) == 0) {
            self.create(server)?
                .context("create before arming the kill")?;
        }
        self.stats.kills += 1;
        let ids: Vec<String> = self.boxes.keys().cloned().collect();
        if self.rng.below(2) == 0 {
            let id = ids[self.rng.below(ids.len() as u64) as usize].clone();
            ensure!(self.write(server, &id)?, "write before arming the kill");
            let window = (self.pause_ms * 1.5).max(1.0) as u64;
            let killer = server.kill_after(Duration::from_millis(self.rng.below(window + 1)));
            self.stats.kills_during_pause += 1;
            let acked = self.pause(server, &id)?;
            if acked && !server.is_dead() {
                // Acknowledged before the kill: its blob must survive; keep the server busy meanwhile.
                let _ = self.write(server, ids.iter().find(|&i| i != &id).unwrap_or(&id));
            }
            killer.join().expect("killer thread");
            return Ok(());
        }
        let killer = server.kill_after(Duration::from_millis(self.rng.below(400)));
        while !server.is_dead() {
            let ids: Vec<String> = self.boxes.keys().cloned().collect();
            if ids.is_empty() {
                break;
            }
            let id = ids[self.rng.below(ids.len() as u64) as usize].clone();
            let paused = self.boxes[&id].paused;
            let alive = match (paused, self.rng.below(10)) {
                (true, 0) => self.kill(server, &id)?,
                (true, _) => self.connect(server, &id)?,
                (false, 0..=5) => self.write(server, &id)?,
                (false, _) => self.pause(server, &id)?,
            };
            if !alive {
                break;
            }
        }
        killer.join().expect("killer thread");
        Ok(())
    }

    /// Makes `count` paused bystanders: one real sandbox with a line in `/tmp/log`, paused, copied
    /// `count` times (see the module doc), then the index deleted, so that the next start rebuilds it
    /// from the record files — as it must after sandboxes are added to a data directory by hand.
    fn add_bystanders(&mut self, count: usize) -> Result<()> {
        let server = Server::start(&self.data_dir, &self.tmp_dir)?;
        let seed = self.create(&server)?.context("create the seed")?;
        ensure!(self.write(&server, &seed)?, "write to the seed");
        ensure!(self.pause(&server, &seed)?, "pause the seed");
        drop(server);
        self.bystander_log = self.boxes[&seed].log.clone();
        let boxes = self.data_dir.join("boxes");
        let record: stasis::lifecycle::SandboxRecord =
            serde_json::from_slice(&std::fs::read(boxes.join(&seed).join("record.json"))?)?;
        for i in 0..count {
            let id = stasis::lifecycle::id::new_id("");
            let dir = boxes.join(&id);
            std::fs::create_dir(&dir)?;
            std::fs::hard_link(boxes.join(&seed).join("state.blob"), dir.join("state.blob"))?;
            let mut copy = record.clone();
            copy.id = id.clone();
            copy.sequence = record.sequence + 1 + i as u64;
            // Created "later" than any sandbox of the run, so the model's sandboxes come first in a
            // listing and one page shows them all.
            copy.created_at_ms = record.created_at_ms + 10 * 365 * 24 * 3600 * 1000;
            copy.metadata = [("bystander".to_owned(), "yes".to_owned())].into();
            std::fs::write(dir.join("record.json"), serde_json::to_vec(&copy)?)?;
            self.bystanders.insert(id);
        }
        std::fs::remove_dir_all(self.data_dir.join("index"))?;
        Ok(())
    }

    /// Resumes a few bystanders: each comes back with the seed's files.
    fn resume_bystanders(&mut self, server: &Server, count: usize) -> Result<()> {
        let ids: Vec<String> = self.bystanders.iter().take(count).cloned().collect();
        for id in ids {
            let (status, body) = server.api(
                "POST",
                &format!("/sandboxes/{id}/connect"),
                Some(&json!({})),
            )?;
            ensure!(
                status == 201,
                "bystander {id} does not resume: {status} {}",
                String::from_utf8_lossy(&body)
            );
            let json: Value = serde_json::from_slice(&body)?;
            let token = json["envdAccessToken"]
                .as_str()
                .context("envdAccessToken")?
                .to_owned();
            self.bystanders.remove(&id);
            self.boxes.insert(
                id.clone(),
                Model {
                    token,
                    log: self.bystander_log.clone(),
                    paused: false,
                    in_flight: InFlight::None,
                },
            );
            let found = self.read_log(server, &id)?;
            ensure!(
                found == self.bystander_log,
                "bystander {id} resumed with /tmp/log {found:?}, expected {:?}",
                self.bystander_log
            );
        }
        Ok(())
    }

    /// Temp files (`.tmp*`, as `tempfile` names them) anywhere in the data dir.
    fn stray_temp_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                Self::stray_temp_files(&entry.path(), out)?;
            } else if entry.file_name().to_string_lossy().starts_with(".tmp") {
                out.push(entry.path());
            }
        }
        Ok(())
    }

    /// The data dir's parent holds only the data dir and the server's (empty) temp dir.
    fn check_nothing_outside(&self) -> Result<()> {
        let parent = self.data_dir.parent().context("parent")?;
        let mut names: Vec<String> = std::fs::read_dir(parent)?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_>>()?;
        names.sort();
        ensure!(
            names == ["data", "tmp"],
            "files appeared beside the data dir: {names:?}"
        );
        let leftovers: Vec<_> = std::fs::read_dir(&self.tmp_dir)?.collect();
        ensure!(
            leftovers.is_empty(),
            "files left in the server's TMPDIR: {leftovers:?}"
        );
        Ok(())
    }
}

#[test]
fn sigkill_at_random_instants_never_loses_an_acknowledged_pause() -> Result<()> {
    let points: usize = match std::env::var("STASIS_CRASH_POINTS") {
        Ok(v) => v.parse().context("STASIS_CRASH_POINTS")?,
        Err(_) => 100,
    };
    let seed: u64 = match std::env::var("STASIS_CRASH_SEED") {
        Ok(v) => v.parse().context("STASIS_CRASH_SEED")?,
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as u64,
    };
    let parent = tempfile::tempdir()?;
    let data_dir = parent.path().join("data");
    let tmp_dir = parent.path().join("tmp");
    std::fs::create_dir(&tmp_dir)?;
    let mut run = Run {
        rng: Rng(seed),
        seed,
        data_dir,
        tmp_dir,
        boxes: BTreeMap::new(),
        next_line: 0,
        pause_ms: 50.0,
        stats: Stats::default(),
        bystanders: BTreeSet::new(),
        bystander_log: Vec::new(),
    };
    let started = Instant::now();
    let bystanders: usize = match std::env::var("STASIS_CRASH_BYSTANDERS") {
        Ok(v) => v.parse().context("STASIS_CRASH_BYSTANDERS")?,
        Err(_) => 2_000,
    };
    run.add_bystanders(bystanders)
        .with_context(|| format!("making the bystanders; replay with STASIS_CRASH_SEED={seed}"))?;
    for point in 0..points {
        let result = (|| -> Result<()> {
            let server = Server::start(&run.data_dir, &run.tmp_dir)?;
            run.verify(&server, point % 10 == 0)?;
            run.crash_point(&server)
        })();
        result.with_context(|| {
            format!(
                "crash point {point} of {points}; replay with STASIS_CRASH_SEED={}",
                run.seed
            )
        })?;
    }
    // The last crash is checked too, then the server stops for good.
    let server = Server::start(&run.data_dir, &run.tmp_dir)?;
    run.verify(&server, true)
        .with_context(|| format!("after the last crash; replay with STASIS_CRASH_SEED={seed}"))?;
    run.resume_bystanders(&server, 3)
        .with_context(|| format!("replay with STASIS_CRASH_SEED={seed}"))?;
    drop(server);
    Run::stray_temp_files(&run.data_dir, &mut run.stats.stray_temp_files)?;
    run.check_nothing_outside()
        .with_context(|| format!("replay with STASIS_CRASH_SEED={seed}"))?;
    eprintln!(
        "seed {seed}: {:?} in {:.1} s",
        run.stats,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
