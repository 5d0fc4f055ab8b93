//! The store at scale: a data directory holding `count` paused `base` sandboxes (100,000 in the full
//! run, 2,000 in `--quick`), and what a node with that many must still do fast — start (process spawned
//! → `/health` answered), list (the first page filtered by metadata, pages deep into a cursor), apply
//! timeouts (a reaper pass with many due, and with none), and what each paused sandbox costs (disk, index
//! bytes, server memory).
//!
//! How the data directory is made: pausing 100,000 sandboxes one by one would take most of the run, so
//! one real `base` sandbox is created, given a file by a shell command and paused through a real server,
//! and its directory is copied `count` times: each copy has the record rewritten (a new id, creation
//! time, sequence and metadata `user=u<i % 100>`, `batch=b<i % 10>`) and the blob hard-linked to the
//! original's (or to one of its copies, one per 50,000: ext4 limits a file's links) — a blob is never
//! written in place (a resume maps it copy-on-write and deletes only its own
//! link), so every copy is a valid paused sandbox, and the disk figure is the real sandbox's. No index is
//! written: the first start builds it from the record files (the migration of a data directory made
//! before the index existed; measured), and the later starts load it.
//!
//! Each start is a new process: the bench binary itself, run with `--serve-child DIR`, serving exactly
//! as `stasis serve` does (`stasis_server::serve`); it is stopped with SIGKILL, as a crash would, so
//! every start after the first is a start after a crash.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::json;
use stasis::RuntimeConfig;
use stasis::lifecycle::{CreateRequest, ManagerConfig, SandboxRecord, SandboxState};
use stasis_server::AppState;

use crate::http::{API_KEY, Server};
use crate::stats::{Measurement, ms};

/// What the scenario is run with.
pub struct StoreOptions {
    /// Paused sandboxes in the data directory.
    pub count: usize,
    /// Running sandboxes due in a reaper pass.
    pub due: usize,
    /// Starts measured after the first (which builds the index), and reaper passes.
    pub repeats: usize,
}

/// A server process the bench started.
struct Spawned {
    child: Child,
    server: Server,
    /// Spawn to the first answered `/health`.
    ready: Duration,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // SIGKILL: the start after it is a start after a crash.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Spawned {
    /// The server's resident memory in MiB, from `/proc/PID/status`.
    fn rss_mib(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            })
            .map_or(f64::NAN, |kib| kib / 1024.0)
    }
}

/// The arguments of the child mode (`--serve-child DIR --serve-cache DIR`).
fn child_args(data_dir: &Path, cache_dir: &Path) -> Vec<std::ffi::OsString> {
    vec![
        "--serve-child".into(),
        data_dir.into(),
        "--serve-cache".into(),
        cache_dir.into(),
    ]
}

/// The child mode: serves `data_dir` as `stasis serve` would, until killed.
pub fn serve_child(data_dir: PathBuf, cache_dir: Option<PathBuf>) -> Result<()> {
    let config = stasis_server::config::ServerConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir,
        api_keys: vec![API_KEY.to_owned()],
        max_body_bytes: stasis_server::config::DEFAULT_MAX_BODY_BYTES,
        cache_dir,
        warm_up: false,
        metrics_interval: std::time::Duration::from_secs(5),
        manager: ManagerConfig {
            max_paused: usize::MAX,
            ..ManagerConfig::default()
        },
        domain: None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(stasis_server::serve(
        config,
        stasis_server::serve::shutdown_signal(),
    ))
}

/// Starts a server process on `data_dir` and waits until `/health` answers.
fn spawn(data_dir: &Path, cache_dir: &Path) -> Result<Spawned> {
    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe()?)
        .args(child_args(data_dir, cache_dir))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("piped stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let address = loop {
        let Some(line) = lines.next() else {
            bail!("the server exited before listening: {:?}", child.wait()?)
        };
        if let Some(address) = line?.strip_prefix("stasis listening on ") {
            break address.to_owned();
        }
    };
    // Keep draining stdout, so a later line never blocks the server.
    std::thread::spawn(move || lines.for_each(drop));
    let server = Server::at(&address, API_KEY)?;
    loop {
        match server.get("/health") {
            Ok((204, _, _)) => break,
            _ if started.elapsed() > Duration::from_secs(600) => bail!("not healthy in 10 min"),
            _ => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    Ok(Spawned {
        child,
        server,
        ready: started.elapsed(),
    })
}

/// Pauses one real `base` sandbox (with a file written by a command) in a server on `seed_dir`; returns
/// its record, and the paths of its record and blob.
fn seed(seed_dir: &Path, cache_dir: &Path) -> Result<(SandboxRecord, PathBuf)> {
    let spawned = spawn(seed_dir, cache_dir)?;
    let (id, token) = spawned.server.create_sandbox()?;
    spawned
        .server
        .run_command(&id, &token, "echo 'state worth keeping' > /tmp/note.txt")?;
    spawned.server.pause(&id)?;
    drop(spawned);
    let dir = seed_dir.join("boxes").join(&id);
    let record: SandboxRecord = serde_json::from_slice(&std::fs::read(dir.join("record.json"))?)?;
    ensure!(
        record.state == SandboxState::Paused,
        "the seed is not paused"
    );
    Ok((record, dir))
}

/// Allocated bytes of a file or directory (what `du` counts).
fn allocated(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)?.blocks() * 512)
}

/// Copies that share one blob file by hard links (ext4 allows 65,000 links to a file).
const LINKS_PER_BLOB: usize = 50_000;

/// Writes `count` copies of the seed into `data_dir` (see the module doc); returns how long it took.
fn generate(
    data_dir: &Path,
    seed: &SandboxRecord,
    seed_dir: &Path,
    count: usize,
) -> Result<Duration> {
    let started = Instant::now();
    let boxes = data_dir.join("boxes");
    std::fs::create_dir_all(&boxes)?;
    let seed_blob = seed_dir.join("state.blob");
    let mut blob = seed_blob.clone();
    let base_ms = seed.created_at_ms.saturating_sub(count as u64);
    for i in 0..count {
        let id = stasis::lifecycle::id::new_id("");
        let dir = boxes.join(&id);
        std::fs::create_dir(&dir)?;
        if i > 0 && i % LINKS_PER_BLOB == 0 {
            // A file takes at most 65,000 links on ext4: the next copies link to a copy of the blob.
            blob = seed_dir.join(format!("state-{i}.blob"));
            std::fs::copy(&seed_blob, &blob)?;
        }
        std::fs::hard_link(&blob, dir.join("state.blob"))?;
        let mut record = seed.clone();
        record.id = id;
        record.created_at_ms = base_ms + i as u64;
        record.started_at_ms = record.created_at_ms;
        record.sequence = i as u64;
        record.metadata = [
            ("user".to_owned(), format!("u{}", i % 100)),
            ("batch".to_owned(), format!("b{}", i % 10)),
        ]
        .into();
        // Not synced: the bench's own data, rebuilt if the machine crashes.
        std::fs::write(dir.join("record.json"), serde_json::to_vec_pretty(&record)?)?;
    }
    Ok(started.elapsed())
}

/// Walks every page of `query` (100 per page); returns each page's latency in ms and the items seen.
fn walk(server: &Server, query: &str) -> Result<(Vec<f64>, usize)> {
    let mut latencies = Vec::new();
    let mut seen = 0;
    let mut token: Option<String> = None;
    loop {
        let path = match &token {
            Some(t) => format!("/v2/sandboxes?{query}&limit=100&nextToken={t}"),
            None => format!("/v2/sandboxes?{query}&limit=100"),
        };
        let started = Instant::now();
        let (status, next, body) = server.get(&path)?;
        latencies.push(ms(started.elapsed()));
        ensure!(status == 200, "list answered {status}");
        let items: Vec<serde_json::Value> = serde_json::from_slice(&body)?;
        seen += items.len();
        match next {
            Some(next) => token = Some(next),
            None => return Ok((latencies, seen)),
        }
    }
}

/// Latencies of `n` requests for the first page of `query`, and how many items that page held.
fn first_pages(server: &Server, query: &str, n: usize) -> Result<(Vec<f64>, usize)> {
    let mut latencies = Vec::new();
    let mut items = 0;
    for _ in 0..n {
        let started = Instant::now();
        let (status, _, body) = server.get(&format!("/v2/sandboxes?{query}&limit=100"))?;
        latencies.push(ms(started.elapsed()));
        ensure!(status == 200, "list answered {status}");
        items = serde_json::from_slice::<Vec<serde_json::Value>>(&body)?.len();
    }
    Ok((latencies, items))
}

/// Milliseconds of the file work of a kill, without Stasis: a directory tree shaped like a sandbox's
/// (its record, `fs/tmp`, `fs/home/user`) removed, and two fsync'd 512-byte writes.
fn kill_floor_ms(dir: &Path, n: usize) -> Result<f64> {
    let tree = dir.join(format!("reference-tree-{n}"));
    std::fs::create_dir_all(tree.join("fs/tmp"))?;
    std::fs::create_dir_all(tree.join("fs/home/user"))?;
    std::fs::write(tree.join("record.json"), [b' '; 600])?;
    std::fs::File::open(&tree)?.sync_all()?;
    let started = Instant::now();
    std::fs::remove_dir_all(&tree)?;
    let removed = ms(started.elapsed());
    Ok(removed
        + crate::reference::fsync_write_ms(dir, 512)?
        + crate::reference::fsync_write_ms(dir, 512)?)
}

fn median(samples: Vec<f64>) -> f64 {
    Measurement::new("", json!({}), "ms", samples).median
}

/// The second half of a walk's pages: the pages deep into the cursor.
fn deep(latencies: &[f64]) -> Vec<f64> {
    latencies[latencies.len() / 2..].to_vec()
}

/// Runs the scenario in `work`.
pub fn run(work: &Path, options: &StoreOptions) -> Result<Vec<Measurement>> {
    let count = options.count;
    let cache_dir = work.join("store-cache");
    let seed_dir = work.join("store-seed");
    let data_dir = work.join(format!("store-{count}"));
    let params = json!({ "paused": count });
    let mut out = Vec::new();

    let (record, sandbox_dir) = seed(&seed_dir, &cache_dir)?;
    let blob = sandbox_dir.join("state.blob");
    let disk_kib = (allocated(&blob)?
        + allocated(&sandbox_dir.join("record.json"))?
        + allocated(&sandbox_dir)?) as f64
        / 1024.0;
    out.push(Measurement::new(
        "store: disk per paused base sandbox",
        json!({ "blob_bytes": std::fs::metadata(&blob)?.len() }),
        "KiB",
        vec![disk_kib],
    ));

    // The same server on an empty data directory: what a start costs with nothing to load.
    let empty = work.join("store-empty");
    let mut empty_starts = Vec::new();
    for _ in 0..options.repeats {
        empty_starts.push(ms(spawn(&empty, &cache_dir)?.ready));
    }
    let empty_start = median(empty_starts);

    let generated = generate(&data_dir, &record, &sandbox_dir, count)?;
    out.push(Measurement::new(
        "store: generate the data directory (copies of one paused sandbox)",
        params.clone(),
        "ms",
        vec![ms(generated)],
    ));

    let first = spawn(&data_dir, &cache_dir)?;
    out.push(
        Measurement::new(
            "store: first start (index built from the record files)",
            params.clone(),
            "ms",
            vec![ms(first.ready)],
        )
        .against("start on an empty data dir", empty_start),
    );
    drop(first);
    let index_bytes = std::fs::metadata(data_dir.join("index/snapshot"))?.len();
    out.push(Measurement::new(
        "store: index snapshot per paused sandbox",
        params.clone(),
        "bytes",
        vec![index_bytes as f64 / count.max(1) as f64],
    ));

    let mut starts = Vec::new();
    let mut last = None;
    for _ in 0..options.repeats {
        drop(last.take());
        let spawned = spawn(&data_dir, &cache_dir)?;
        starts.push(ms(spawned.ready));
        last = Some(spawned);
    }
    let spawned = last.context("at least one start")?;
    out.push(
        Measurement::new(
            "store: start to healthy (after a crash)",
            params.clone(),
            "ms",
            starts,
        )
        .against("start on an empty data dir", empty_start),
    );
    out.push(Measurement::new(
        "store: server memory (RSS) with the index loaded",
        params.clone(),
        "MiB",
        vec![spawned.rss_mib()],
    ));

    let server = &spawned.server;
    let (filtered, items) = first_pages(server, "state=paused&metadata=user%3Du7", 20)?;
    ensure!(
        items == (count / 100).min(100),
        "the filtered page holds {items}"
    );
    out.push(Measurement::new(
        "store: list, first page filtered by metadata (HTTP)",
        json!({ "paused": count, "matching": count / 100 }),
        "ms",
        filtered,
    ));
    let (unfiltered, _) = first_pages(server, "state=paused", 20)?;
    out.push(Measurement::new(
        "store: list, first page of the paused (HTTP)",
        params.clone(),
        "ms",
        unfiltered,
    ));
    let (pages, seen) = walk(server, "state=paused")?;
    ensure!(seen == count, "the walk saw {seen} of {count}");
    out.push(Measurement::new(
        "store: list, page deep into the cursor (second half of a walk, HTTP)",
        json!({ "paused": count, "pages": pages.len() }),
        "ms",
        deep(&pages),
    ));
    let (pages, seen) = walk(server, "state=paused&metadata=batch%3Db3")?;
    ensure!(seen == count / 10, "the filtered walk saw {seen}");
    out.push(Measurement::new(
        "store: list, deep page filtered by metadata (HTTP)",
        json!({ "paused": count, "matching": count / 10, "pages": pages.len() }),
        "ms",
        deep(&pages),
    ));
    drop(spawned);

    out.extend(reaper(&data_dir, &cache_dir, options)?);
    Ok(out)
}

/// Reaper passes in this process, on the data directory with its paused sandboxes: with none due, with
/// `due` running sandboxes not due yet, and with all of them due (killed by their timeout).
fn reaper(data_dir: &Path, cache_dir: &Path, options: &StoreOptions) -> Result<Vec<Measurement>> {
    let mut runtime = RuntimeConfig::new(data_dir);
    runtime.cache_dir = Some(cache_dir.to_owned());
    let config = ManagerConfig {
        max_running: options.due + 1,
        max_paused: usize::MAX,
        // The passes are made by hand, not by the background thread.
        reaper_interval: Duration::from_secs(24 * 3600),
        ..ManagerConfig::default()
    };
    let (state, _) = AppState::open_runtime(runtime, vec![API_KEY.to_owned()], 64 << 20, config)?;
    let manager = state.manager();
    let params = json!({ "paused": options.count, "due": options.due });
    let timed = |samples: &mut Vec<f64>| {
        let started = Instant::now();
        manager.reap();
        samples.push(ms(started.elapsed()));
    };
    let mut idle = Vec::new();
    for _ in 0..20 {
        timed(&mut idle);
    }
    let (mut not_due, mut due, mut per_due, mut fsyncs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..options.repeats.min(3) {
        let mut ids = Vec::new();
        for _ in 0..options.due {
            let request = CreateRequest {
                template: "base".into(),
                timeout: Some(Duration::from_secs(3600)),
                ..CreateRequest::default()
            };
            ids.push(manager.create(request)?.id);
        }
        timed(&mut not_due);
        for id in &ids {
            manager.set_timeout(id, Duration::ZERO)?;
        }
        // A kill is file work: the sandbox's directory tree removed and two syncs (the record's
        // unlink, the journal's append). The same work without Stasis, at this moment, with whatever
        // else the machine writes, is the reference.
        for i in 0..10 {
            fsyncs.push(kill_floor_ms(data_dir, i)?);
        }
        timed(&mut due);
        per_due.push(due.last().copied().unwrap_or(f64::NAN) / options.due as f64 * 1000.0);
        let left = manager.count(SandboxState::Running);
        ensure!(left == 0, "{left} sandboxes outlived their timeout");
    }
    let fsync = median(fsyncs);
    // What the change that crosses the journal's threshold pays once per that many changes.
    let mut compactions = Vec::new();
    for _ in 0..options.repeats.min(3) {
        let started = Instant::now();
        manager.compact_index()?;
        compactions.push(ms(started.elapsed()));
    }
    Ok(vec![
        Measurement::new(
            "store: reaper pass, none running",
            json!({ "paused": options.count }),
            "ms",
            idle,
        ),
        Measurement::new(
            "store: reaper pass, running but none due",
            params.clone(),
            "ms",
            not_due,
        ),
        Measurement::new(
            "store: reaper pass, all due (each killed)",
            params.clone(),
            "ms",
            due,
        ),
        Measurement::new(
            "store: index compaction (snapshot written and synced)",
            json!({ "paused": options.count }),
            "ms",
            compactions,
        ),
        Measurement::new("store: reaper pass, per due sandbox", params, "µs", per_due).against(
            "a kill's file work (tree removed, 2 fsyncs)",
            fsync * 1000.0,
        ),
    ])
}
