//! Tests of Stasis's own preview1 host (`stasis::wasi`): guest programs run under it and, for the differential
//! tests, under wasmtime-wasi's preview1 with the same inputs, comparing stdout, stderr, exit code and the
//! resulting files; the disk quota shared between processes, and save/restore into a new instance. Escapes,
//! limits and bad pointers are the containment suite's (`containment.rs`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context as _, Result, ensure};
use stasis::wasi::{
    DiskQuota, Mount, OutputSink, ProcExit, Stdin, WasiConfig, WasiCtx, WasiLimits,
};
use wasmtime::{Engine, Linker, Module, Store};

/// What a guest run produced.
#[derive(Debug, PartialEq)]
struct Outcome {
    exit: i32,
    stdout: String,
    stderr: String,
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(Engine::default)
}

/// Compiles each guest once per test binary.
fn module(path: &str) -> Result<Module> {
    static CACHE: OnceLock<Mutex<HashMap<String, Module>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(m) = cache
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .get(path)
    {
        return Ok(m.clone());
    }
    let m = Module::from_file(engine(), path)?;
    cache
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .insert(path.to_owned(), m.clone());
    Ok(m)
}

fn ours_linker() -> Result<Linker<WasiCtx>> {
    let mut linker = Linker::new(engine());
    stasis::wasi::add_to_linker(&mut linker, |c| c)?;
    Ok(linker)
}

/// Turns a `_start` result into an exit code, keeping real traps as errors.
fn exit_code(r: wasmtime::Result<()>) -> Result<i32> {
    match r {
        Ok(()) => Ok(0),
        Err(e) => match e.downcast_ref::<ProcExit>() {
            Some(p) => Ok(p.0),
            None => Err(e.into()),
        },
    }
}

/// Runs a command guest under our host.
fn run_ours(path: &str, config: WasiConfig) -> Result<(Outcome, WasiCtx)> {
    let mut store = Store::new(engine(), WasiCtx::new(config)?);
    let instance = ours_linker()?.instantiate(&mut store, &module(path)?)?;
    let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
    let exit = exit_code(start.call(&mut store, ()))?;
    let mut ctx = store.into_data();
    let outcome = Outcome {
        exit,
        stdout: String::from_utf8(ctx.take_stdout())?,
        stderr: String::from_utf8(ctx.take_stderr())?,
    };
    Ok((outcome, ctx))
}

/// The inputs of a differential run.
struct Inputs<'a> {
    args: &'a [&'a str],
    env: &'a [(&'a str, &'a str)],
    stdin: &'a [u8],
    /// Extra mounts: (host dir, guest name, read-only).
    mounts: Vec<(PathBuf, &'a str, bool)>,
}

fn our_config(root: &Path, i: &Inputs<'_>) -> WasiConfig {
    let mut c = WasiConfig::new(root);
    c.args = i.args.iter().map(|s| s.to_string()).collect();
    c.env = i
        .env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    c.stdin = Stdin::Bytes(i.stdin.to_vec());
    c.mounts = i
        .mounts
        .iter()
        .map(|(h, g, ro)| Mount {
            host: h.clone(),
            guest: g.to_string(),
            read_only: *ro,
            quota: None,
        })
        .collect();
    c
}

/// Runs a command guest under wasmtime-wasi's preview1.
fn run_reference(path: &str, root: &Path, i: &Inputs<'_>) -> Result<Outcome> {
    use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
    use wasmtime_wasi::{FsPerms, WasiCtxBuilder};
    let stdout = MemoryOutputPipe::new(1 << 20);
    let stderr = MemoryOutputPipe::new(1 << 20);
    let mut b = WasiCtxBuilder::new();
    b.args(i.args)
        .stdin(MemoryInputPipe::new(i.stdin.to_vec()))
        .stdout(stdout.clone())
        .stderr(stderr.clone());
    for (k, v) in i.env {
        b.env(k, v);
    }
    b.preopened_dir(root, "/", FsPerms::ReadWrite)?;
    for (h, g, ro) in &i.mounts {
        b.preopened_dir(
            h,
            g,
            if *ro {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            },
        )?;
    }
    let mut store = Store::new(engine(), b.build_p1());
    let mut linker = Linker::new(engine());
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |c| c)?;
    let instance = linker.instantiate(&mut store, &module(path)?)?;
    let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
    let exit = match start.call(&mut store, ()) {
        Ok(()) => 0,
        Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(x) => x.0,
            None => return Err(e.into()),
        },
    };
    drop(store);
    Ok(Outcome {
        exit,
        stdout: String::from_utf8(stdout.contents().to_vec())?,
        stderr: String::from_utf8(stderr.contents().to_vec())?,
    })
}

/// Every entry under `dir` with its content (files), target (symlinks) or a marker (directories).
fn tree(dir: &Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            let rel = p.strip_prefix(dir)?.to_string_lossy().into_owned();
            let meta = p.symlink_metadata()?;
            let desc = if meta.is_symlink() {
                // Targets inside the test directory are shown relative to it, so two trees compare equal.
                let target = std::fs::read_link(&p)?;
                format!(
                    "-> {}",
                    target.strip_prefix(dir).unwrap_or(&target).display()
                )
            } else if meta.is_dir() {
                stack.push(p.clone());
                "<dir>".to_owned()
            } else {
                String::from_utf8_lossy(&std::fs::read(&p)?).into_owned()
            };
            out.insert(rel, desc);
        }
    }
    Ok(out)
}

/// Runs `path` under both hosts on identical fresh trees made by `setup` and requires identical results.
/// Returns our outcome and the resulting tree of the root.
fn differential(
    path: &str,
    setup: impl Fn(&Path) -> Result<()>,
    inputs: impl Fn(&Path) -> Inputs<'static>,
) -> Result<(Outcome, BTreeMap<String, String>)> {
    let ours_dir = tempfile::tempdir()?;
    let ref_dir = tempfile::tempdir()?;
    setup(ours_dir.path())?;
    setup(ref_dir.path())?;
    let (ours, _) = run_ours(
        path,
        our_config(&ours_dir.path().join("root"), &inputs(ours_dir.path())),
    )?;
    let reference = run_reference(path, &ref_dir.path().join("root"), &inputs(ref_dir.path()))?;
    for (o, r) in ours.stdout.lines().zip(reference.stdout.lines()) {
        ensure!(
            o == r,
            "first differing line:\n  ours:      {o}\n  reference: {r}"
        );
    }
    ensure!(
        ours == reference,
        "outcomes differ:\nours: {ours:#?}\nreference: {reference:#?}"
    );
    let ours_tree = tree(ours_dir.path())?;
    ensure!(ours_tree == tree(ref_dir.path())?, "resulting files differ");
    Ok((ours, ours_tree))
}

fn assert_line(out: &Outcome, line: &str) -> Result<()> {
    ensure!(
        out.stdout.lines().any(|l| l == line),
        "missing line {line:?} in:\n{}",
        out.stdout
    );
    Ok(())
}

fn fs_setup(dir: &Path) -> Result<()> {
    std::fs::create_dir(dir.join("root"))?;
    std::fs::create_dir(dir.join("data"))?;
    std::fs::write(dir.join("data/ro.txt"), b"read only\n")?;
    Ok(())
}

fn fs_inputs(dir: &Path) -> Inputs<'static> {
    Inputs {
        args: &["wasi_fs", "7"],
        env: &[("GREETING", "hi"), ("EMPTY", "")],
        stdin: b"piped input",
        mounts: vec![(dir.join("data"), "/data", true)],
    }
}

#[test]
fn fs_matches_wasmtime_wasi() -> Result<()> {
    let (out, files) = differential(stasis_guests::WASI_FS, fs_setup, fs_inputs)?;
    assert_eq!(out.exit, 7);
    assert_eq!(out.stderr, "to stderr\n");
    assert_line(&out, r#"stdin: ok "piped input""#)?;
    assert_line(&out, r#"after append: ok "hello world\nmore\nend\n""#)?;
    assert_line(&out, "data write: errno Some(63)")?;
    assert_eq!(
        files.get("root/work/a/f.txt").map(String::as_str),
        Some("hello")
    );
    assert_eq!(
        files.get("data/ro.txt").map(String::as_str),
        Some("read only\n")
    );
    Ok(())
}

/// Runs `path` under both hosts on identical fresh trees and returns both outcomes, for guests whose output
/// has lines (prefixed `x-`) where Stasis deliberately differs.
fn both(
    path: &str,
    setup: impl Fn(&Path) -> Result<()>,
    inputs: &Inputs<'_>,
) -> Result<(Outcome, Outcome)> {
    let ours_dir = tempfile::tempdir()?;
    let ref_dir = tempfile::tempdir()?;
    setup(ours_dir.path())?;
    setup(ref_dir.path())?;
    let (ours, _) = run_ours(path, our_config(&ours_dir.path().join("root"), inputs))?;
    let reference = run_reference(path, &ref_dir.path().join("root"), inputs)?;
    Ok((ours, reference))
}

fn root_only(dir: &Path) -> Result<()> {
    std::fs::create_dir(dir.join("root"))?;
    Ok(())
}

#[test]
fn raw_imports_match_wasmtime_wasi() -> Result<()> {
    let inputs = Inputs {
        args: &["wasi_raw", "a"],
        env: &[("K", "V")],
        stdin: b"in",
        mounts: vec![],
    };
    let (ours, reference) = both(stasis_guests::WASI_RAW, root_only, &inputs)?;
    let common = |o: &Outcome| {
        o.stdout
            .lines()
            .filter(|l| !l.starts_with("x-"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    for (o, r) in common(&ours).iter().zip(common(&reference).iter()) {
        ensure!(
            o == r,
            "first differing line:\n  ours:      {o}\n  reference: {r}\nfull output:\n{}",
            ours.stdout
        );
    }
    assert_eq!(common(&ours), common(&reference));
    assert_eq!((ours.exit, reference.exit), (3, 3));
    for line in [
        "poll_oneoff sleep: (0, 1, 7, 0, true)",
        "clock_time_get thread cputime: 8",
        "sock_accept: 57",
        "x-fd_allocate: 0",
        "x-sock_shutdown closed: 8",
        r#"fd_read stdin: (0, 2, [105, 110])"#,
        r#"fd_read renumbered: (0, 3, [48, 49, 50])"#,
        "poll_oneoff fd ready: (0, 1, 2, 0, 1)",
        "poll_oneoff closed fd: (8, 1, 2, 0, 1)",
    ] {
        ensure!(
            ours.stdout.lines().any(|l| l == line),
            "missing {line:?} in:\n{}",
            ours.stdout
        );
    }

    Ok(())
}

/// Runs the quota guest in `mode` under our host with `limits` on `root`.
fn run_quota(mode: &str, root: &Path, limits: WasiLimits) -> Result<Outcome> {
    let mut c = WasiConfig::new(root);
    c.args = vec!["escape_quota".into(), mode.into()];
    c.limits = limits;
    Ok(run_ours(stasis_guests::ESCAPE_QUOTA, c)?.0)
}

#[test]
fn disk_quota_is_shared_between_contexts_of_a_sandbox() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let quota = Arc::new(DiskQuota::new(10_000, u64::MAX));
    let limits = WasiLimits {
        disk_quota: Some(quota.clone()),
        ..Default::default()
    };
    run_quota("bytes", dir.path(), limits.clone())?;
    assert_eq!(quota.used_bytes(), 3000);
    // A second process of the same sandbox sees the first one's usage instead of rescanning from zero.
    std::fs::write(dir.path().join("other"), [0u8; 100])?;
    let out = run_quota("bytes", dir.path(), limits)?;
    assert_line(&out, "write: 7000 then errno 51")?;
    Ok(())
}

#[test]
fn stdout_capture_is_bounded_and_callbacks_see_everything() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let mut c = our_config(dir.path(), &fs_inputs(dir.path()));
    c.mounts.clear();
    c.stdout = OutputSink::capture(10).with_callback(move |b| {
        seen2
            .lock()
            .map(|mut s| s.extend_from_slice(b))
            .unwrap_or(())
    });
    c.stderr = OutputSink::callback(|_| {});
    c.stdin = Stdin::Reader(Box::new(std::io::Cursor::new(b"from a reader".to_vec())));
    let mut store = Store::new(engine(), WasiCtx::new(c)?);
    let instance = ours_linker()?.instantiate(&mut store, &module(stasis_guests::WASI_FS)?)?;
    let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
    assert_eq!(exit_code(start.call(&mut store, ()))?, 7);
    let ctx = store.data_mut();
    assert_eq!(ctx.take_stdout(), b"args: [\"7\"");
    assert!(ctx.stdout_truncated());
    assert!(
        ctx.take_stderr().is_empty(),
        "stderr went to a callback only"
    );
    assert!(!ctx.stderr_truncated());
    let all = String::from_utf8(
        seen.lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone(),
    )?;
    ensure!(all.contains(r#"stdin: ok "from a reader""#), "{all}");
    ensure!(all.len() > 1000);
    Ok(())
}

fn steps_setup(dir: &Path) -> Result<()> {
    let s = dir.join("root/s");
    std::fs::create_dir_all(s.join("dir"))?;
    std::fs::create_dir(dir.join("mount"))?;
    std::fs::write(s.join("file.txt"), b"0123456789abcdef")?;
    for n in ["a", "b", "c", "d"] {
        std::fs::write(s.join("dir").join(n), n)?;
    }
    std::fs::write(s.join("log.txt"), b"")?;
    std::fs::write(s.join("x.txt"), b"XXabcdef")?;
    std::fs::write(s.join("y.txt"), b"YYYYYYYY")?;
    Ok(())
}

fn steps_config(dir: &Path) -> WasiConfig {
    let mut c = WasiConfig::new(dir.join("root"));
    c.args = vec!["wasi_steps".into()];
    c.mounts = vec![Mount {
        host: dir.join("mount"),
        guest: "/mnt".into(),
        read_only: false,
        quota: None,
    }];
    c
}

/// A store with the steps guest instantiated under `ctx`.
fn steps_instance(ctx: WasiCtx) -> Result<(Store<WasiCtx>, wasmtime::Instance)> {
    let mut store = Store::new(engine(), ctx);
    let instance = ours_linker()?.instantiate(&mut store, &module(stasis_guests::WASI_STEPS)?)?;
    Ok((store, instance))
}

fn call(store: &mut Store<WasiCtx>, instance: &wasmtime::Instance, name: &str) -> Result<()> {
    instance
        .get_typed_func::<(), ()>(&mut *store, name)?
        .call(&mut *store, ())?;
    Ok(())
}

#[test]
fn save_and_restore_continue_every_fd_kind_in_a_new_instance() -> Result<()> {
    // Uninterrupted run.
    let straight = tempfile::tempdir()?;
    steps_setup(straight.path())?;
    let (mut store, instance) = steps_instance(WasiCtx::new(steps_config(straight.path()))?)?;
    call(&mut store, &instance, "step1")?;
    call(&mut store, &instance, "step2")?;
    let expected = String::from_utf8(store.data_mut().take_stdout())?;

    // Interrupted run: step1 in instance A, save, restore into a new store and instance B, step2 there.
    let paused = tempfile::tempdir()?;
    steps_setup(paused.path())?;
    let (mut a, instance_a) = steps_instance(WasiCtx::new(steps_config(paused.path()))?)?;
    call(&mut a, &instance_a, "step1")?;
    let state = a.data().save()?;
    // The state is plain data: it survives a trip through a serializer.
    let state: stasis::wasi::WasiState = serde_json::from_str(&serde_json::to_string(&state)?)?;
    let memory = instance_a
        .get_memory(&mut a, "memory")
        .context("memory export")?
        .data(&a)
        .to_vec();
    let mut printed = a.data_mut().take_stdout();
    let open_before = a.data().open_fds();
    drop(a);

    let (mut b, instance_b) =
        steps_instance(WasiCtx::restore(steps_config(paused.path()), &state)?)?;
    assert_eq!(
        b.data().open_fds(),
        open_before,
        "same fd numbers, gaps and closed preopen included"
    );
    let mem_b = instance_b
        .get_memory(&mut b, "memory")
        .context("memory export")?;
    let pages_missing = (memory.len() - mem_b.data_size(&b)) as u64 / 65536;
    mem_b.grow(&mut b, pages_missing)?;
    mem_b.data_mut(&mut b).copy_from_slice(&memory);
    call(&mut b, &instance_b, "step2")?;
    printed.extend(b.data_mut().take_stdout());
    let resumed = String::from_utf8(printed)?;

    assert_eq!(resumed, expected);
    for line in [
        "file continues \"56789\"",
        "dir continues [\"b\", \"c\", \"d\"] cookie 6",
        "log flags 1",
        "renumbered continues \"abc\"",
        "closed preopen Err(8)",
        "monotonic not backwards 1",
    ] {
        ensure!(
            resumed.lines().any(|l| l == line),
            "missing {line:?} in:\n{resumed}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(paused.path().join("root/s/log.txt"))?,
        "one\ntwo\n"
    );
    assert_eq!(tree(paused.path())?, tree(straight.path())?);
    Ok(())
}

#[test]
fn save_refuses_a_file_deleted_while_open() -> Result<()> {
    let dir = tempfile::tempdir()?;
    steps_setup(dir.path())?;
    let (mut store, instance) = steps_instance(WasiCtx::new(steps_config(dir.path()))?)?;
    call(&mut store, &instance, "step1")?;
    store.data().save()?;
    std::fs::remove_file(dir.path().join("root/s/file.txt"))?;
    let err = store
        .data()
        .save()
        .err()
        .context("save of a deleted open file must fail")?;
    ensure!(
        matches!(&err, stasis::wasi::WasiSaveError::FileGone { path, .. } if path == "s/file.txt"),
        "wrong error: {err:?}"
    );
    ensure!(err.to_string().contains("s/file.txt"), "{err}");
    // Replaced by another file at the same path is refused too: the handle no longer matches the path.
    std::fs::write(dir.path().join("root/s/file.txt"), b"new")?;
    ensure!(store.data().save().is_err());
    Ok(())
}

#[test]
fn restored_monotonic_clock_continues_from_the_saved_value() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut ctx = WasiCtx::new(WasiConfig::new(dir.path()))?;
    let mut state = ctx.save()?;
    // Pretend the sandbox had been running for an hour before it was paused.
    state.monotonic_ns += 3_600_000_000_000;
    let saved = state.monotonic_ns;
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut restored = WasiCtx::restore(WasiConfig::new(dir.path()), &state)?;
    let now = restored.monotonic_now();
    ensure!(
        now >= saved && now < saved + 10_000_000,
        "paused time must not count: {now} vs {saved}"
    );
    ensure!(ctx.monotonic_now() < saved);
    Ok(())
}

#[test]
fn restore_refuses_different_preopens() -> Result<()> {
    let dir = tempfile::tempdir()?;
    steps_setup(dir.path())?;
    let state = WasiCtx::new(steps_config(dir.path()))?.save()?;
    let err = WasiCtx::restore(WasiConfig::new(dir.path().join("root")), &state)
        .err()
        .context("must fail")?;
    ensure!(
        matches!(err, stasis::wasi::WasiRestoreError::PreopenMismatch { .. }),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn every_wasi_guest_program_has_a_host_test() {
    // Extend this list together with a test whenever a `wasi_*` guest is added.
    let tested = ["wasi_fs", "wasi_raw", "wasi_steps"];
    let guests: Vec<&str> = stasis_guests::ALL
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| n.starts_with("wasi_"))
        .collect();
    assert_eq!(guests, tested);
}

#[test]
fn restore_takes_args_and_env_from_the_state() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut c = WasiConfig::new(dir.path());
    c.args = vec!["prog".into(), "saved".into()];
    c.env = vec![("K".into(), "saved".into())];
    let state = WasiCtx::new(c)?.save()?;
    let mut c = WasiConfig::new(dir.path());
    c.args = vec!["other".into()];
    let restored = WasiCtx::restore(c, &state)?.save()?;
    assert_eq!(restored.args, state.args);
    assert_eq!(restored.env, state.env);
    assert_eq!(restored.fds, state.fds);
    Ok(())
}

#[test]
fn missing_root_is_a_setup_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let err = WasiCtx::new(WasiConfig::new(dir.path().join("nope")))
        .err()
        .context("must fail")?;
    ensure!(
        matches!(err, stasis::wasi::WasiSetupError::OpenPreopen { .. }),
        "{err:?}"
    );
    Ok(())
}

/// A command module (WAT, which `Module::from_file` compiles) whose `_start` runs `body`; `(call $report X)`
/// prints the errno X as two digits and a newline. Paths in memory: 256 "f", 260 "g", 264 "d/", 268 "f/",
/// 272 "d", 276 "s".
fn errno_probe(dir: &Path, body: &str) -> Result<String> {
    let wat = format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_link"
    (func $path_link (param i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_remove_directory"
    (func $path_remove_directory (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_symlink"
    (func $path_symlink (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_shutdown" (func $sock_shutdown (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 256) "f")
  (data (i32.const 260) "g")
  (data (i32.const 264) "d/")
  (data (i32.const 268) "f/")
  (data (i32.const 272) "d")
  (data (i32.const 276) "s")
  (func $report (param $e i32)
    (i32.store8 (i32.const 0) (i32.add (i32.const 48) (i32.div_u (local.get $e) (i32.const 10))))
    (i32.store8 (i32.const 1) (i32.add (i32.const 48) (i32.rem_u (local.get $e) (i32.const 10))))
    (i32.store8 (i32.const 2) (i32.const 10))
    (i32.store (i32.const 16) (i32.const 0))
    (i32.store (i32.const 20) (i32.const 3))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24))))
  (func (export "_start") {body}))"#
    );
    let path = dir.join("probe.wat");
    std::fs::write(&path, wat)?;
    Ok(path.to_str().context("utf-8 temp path")?.to_owned())
}

fn no_inputs() -> Inputs<'static> {
    Inputs {
        args: &["probe"],
        env: &[],
        stdin: b"",
        mounts: vec![],
    }
}

/// Runs the probe under both hosts, each on a fresh root made by `setup`.
fn probe_both(body: &str, setup: impl Fn(&Path) -> Result<()>) -> Result<(Outcome, Outcome)> {
    let wat_dir = tempfile::tempdir()?;
    let probe = errno_probe(wat_dir.path(), body)?;
    both(&probe, setup, &no_inputs())
}

#[test]
fn path_link_refuses_symlink_follow_like_wasmtime_wasi() -> Result<()> {
    // The WASI testsuite's path_link: linking through a (dangling) symlink with SYMLINK_FOLLOW must fail.
    let setup = |dir: &Path| -> Result<()> {
        root_only(dir)?;
        std::fs::write(dir.join("root/f"), "x")?;
        std::os::unix::fs::symlink("missing", dir.join("root/s"))?;
        Ok(())
    };
    let link = |flags: u32, old: u32| {
        format!(
            "(call $report (call $path_link (i32.const 3) (i32.const {flags}) (i32.const {old}) (i32.const 1) \
             (i32.const 3) (i32.const 260) (i32.const 1)))"
        )
    };
    // follow on a dangling symlink, follow on a file, then a plain link that works.
    let body = format!("{} {} {}", link(1, 276), link(1, 256), link(0, 256));
    let (ours, reference) = probe_both(&body, setup)?;
    assert_eq!(ours.stdout, "28\n28\n00\n");
    assert_eq!(ours, reference);
    Ok(())
}

#[test]
fn path_remove_directory_accepts_trailing_slashes() -> Result<()> {
    // The WASI testsuite's remove_directory_trailing_slashes: "d/" removes d; "f/" and "f" are ENOTDIR.
    let setup = |dir: &Path| -> Result<()> {
        root_only(dir)?;
        std::fs::create_dir(dir.join("root/d"))?;
        std::fs::write(dir.join("root/f"), "x")?;
        Ok(())
    };
    let rmdir = |at: u32, len: u32| {
        format!(
            "(call $report (call $path_remove_directory (i32.const 3) (i32.const {at}) (i32.const {len})))"
        )
    };
    let body = format!(
        "{} {} {} {}",
        rmdir(264, 2),
        rmdir(272, 1),
        rmdir(268, 2),
        rmdir(256, 1)
    );
    let (ours, reference) = probe_both(&body, setup)?;
    // d/ removed, so d is then ENOENT; f/ and f are ENOTDIR. wasmtime-wasi answers EINVAL to "d/".
    assert_eq!(ours.stdout, "00\n44\n54\n54\n");
    assert_eq!(reference.stdout, "28\n00\n54\n54\n");
    Ok(())
}

#[test]
fn a_config_without_root_preopens_exactly_its_mounts_from_fd_3() -> Result<()> {
    let wat_dir = tempfile::tempdir()?;
    let mount = tempfile::tempdir()?;
    // fd_prestat_get writes the tag and the name length; report the length (1 for "m").
    let body = "(call $report (call $fd_prestat_get (i32.const 3) (i32.const 64))) \
                (call $report (i32.load (i32.const 68))) \
                (call $report (call $fd_prestat_get (i32.const 4) (i32.const 64)))";
    let probe = errno_probe(wat_dir.path(), body)?;
    let mut c = WasiConfig::without_root();
    c.mounts = vec![Mount {
        host: mount.path().to_owned(),
        guest: "m".into(),
        read_only: false,
        quota: None,
    }];
    let (out, ctx) = run_ours(&probe, c)?;
    assert_eq!(out.stdout, "00\n01\n08\n");
    // A rootless context saves and restores onto a rootless configuration with the same mounts.
    let state = ctx.save()?;
    assert_eq!(state.preopens.len(), 1);
    let mut c = WasiConfig::without_root();
    c.mounts = vec![Mount {
        host: mount.path().to_owned(),
        guest: "m".into(),
        read_only: false,
        quota: None,
    }];
    WasiCtx::restore(c, &state)?;
    let with_root = WasiCtx::restore(WasiConfig::new(mount.path()), &state);
    ensure!(
        with_root.is_err(),
        "a root where none was saved must not restore"
    );

    // No preopens at all: fd 3 is not open, so the testsuite's sock_shutdown-invalid_fd sees EBADF.
    let other_dir = tempfile::tempdir()?;
    let probe = errno_probe(
        other_dir.path(),
        "(call $report (call $sock_shutdown (i32.const 3) (i32.const 1)))",
    )?;
    let (out, _) = run_ours(&probe, WasiConfig::without_root())?;
    assert_eq!(out.stdout, "08\n");
    Ok(())
}
