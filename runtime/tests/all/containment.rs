//! The containment suite: every hostile guest (`guests/programs/src/bin/escape_*.rs`, plus the `stateful`
//! reactor's `spin` and `grow`) runs in a sandbox of its own, through the same `Runtime`/`Sandbox` API and
//! limits a server uses. Each attempt must end in a clear error for that sandbox (a trap, a timeout) or in
//! an errno the guest reports, nothing outside the sandbox may change, and a bystander sandbox created
//! before the hostile one must keep working afterwards.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, ensure};
use stasis::lifecycle::{MAX_FORK, ManagerConfig};
use stasis::{
    CallError, CommandOutput, Runtime, Sandbox, SandboxLimits, SandboxOptions, SpawnError, Template,
};
use tempfile::TempDir;

use crate::common::{call, runtime_with_limits, stateful};

/// A sandbox that exists before the hostile one runs: a reactor with a counter and a file of its own.
struct Bystander {
    sandbox: Sandbox,
    calls: u64,
}

impl Bystander {
    fn new(runtime: &Runtime) -> Result<Self> {
        let mut sandbox = runtime.create_sandbox(&stateful(runtime)?, SandboxOptions::default())?;
        call(&mut sandbox, "put_file", "/tmp/keep.txt\nkept")?;
        assert_eq!(call(&mut sandbox, "bump", "")?, "1 1");
        Ok(Self { sandbox, calls: 1 })
    }

    /// Calls into the bystander after the hostile guest: its state and its file are as they were.
    fn still_works(&mut self) -> Result<()> {
        self.calls += 1;
        let expected = format!("{0} {0}", self.calls);
        assert_eq!(call(&mut self.sandbox, "bump", "")?, expected);
        assert_eq!(
            call(&mut self.sandbox, "get_file", "/tmp/keep.txt")?,
            "kept"
        );
        Ok(())
    }
}

/// A runtime with `limits`, a bystander, and the command guest `name` loaded as a template.
fn setup(
    limits: SandboxLimits,
    name: &str,
    path: &str,
) -> Result<(TempDir, Runtime, Bystander, Template)> {
    let (tmp, runtime) = runtime_with_limits(limits)?;
    let bystander = Bystander::new(&runtime)?;
    let template = runtime.load_template(name, &stasis_guests::bytes(path))?;
    Ok((tmp, runtime, bystander, template))
}

/// Runs the command `template` with `args` in a fresh sandbox rooted at `root` (a new directory when `None`).
fn run_hostile(
    runtime: &Runtime,
    template: &Template,
    root: Option<PathBuf>,
    args: &[&str],
) -> Result<(Sandbox, CommandOutput)> {
    let mut sandbox = runtime.create_sandbox(
        template,
        SandboxOptions {
            dir: root,
            ..SandboxOptions::default()
        },
    )?;
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let output = sandbox.run(template, &args, b"")?;
    Ok((sandbox, output))
}

fn stdout(output: &CommandOutput) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Asserts that the guest printed each of `lines` exactly.
fn assert_lines(output: &CommandOutput, lines: &[&str]) -> Result<()> {
    let out = stdout(output);
    for line in lines {
        ensure!(
            out.lines().any(|l| l == *line),
            "missing line {line:?} in:\n{out}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Asserts the command ended with a trap whose description contains `needle`.
fn assert_trap(output: &CommandOutput, needle: &str) -> Result<()> {
    ensure!(
        output.exit_code == 134,
        "exit code {}: {output:?}",
        output.exit_code
    );
    let trap = output.trap.as_deref().unwrap_or_default();
    ensure!(
        trap.contains(needle),
        "expected {needle:?} in the trap {trap:?}"
    );
    Ok(())
}

const EFAULT: &str = "21";
const EINVAL: &str = "28";
const ENAMETOOLONG: &str = "37";

/// `tmp/outside.txt` (a secret beside the sandbox) and `tmp/root/` (the sandbox) with the links the path
/// guest tries to leave by.
fn paths_setup(tmp: &Path) -> Result<PathBuf> {
    let root = tmp.join("root");
    std::fs::create_dir_all(root.join("sub"))?;
    std::fs::write(tmp.join("outside.txt"), b"secret")?;
    std::fs::write(root.join("inside.txt"), b"inside")?;
    std::os::unix::fs::symlink(tmp.join("outside.txt"), root.join("abs_link"))?;
    std::os::unix::fs::symlink("../outside.txt", root.join("rel_link"))?;
    std::os::unix::fs::symlink("..", root.join("dir_link"))?;
    std::os::unix::fs::symlink("loop_b", root.join("loop_a"))?;
    std::os::unix::fs::symlink("loop_a", root.join("loop_b"))?;
    std::os::unix::fs::symlink("self_loop", root.join("self_loop"))?;
    Ok(root)
}

#[test]
fn path_traversal_symlinks_and_hard_links_stay_inside() -> Result<()> {
    let (tmp, runtime, mut bystander, template) = setup(
        SandboxLimits::default(),
        "escape_paths",
        stasis_guests::ESCAPE_PATHS,
    )?;
    let root = paths_setup(tmp.path())?;
    let (_sandbox, output) = run_hostile(&runtime, &template, Some(root.clone()), &[])?;
    assert_eq!(output.exit_code, 0, "{output:?}");
    // `..` past the root and links leading outside are EPERM (63), as in wasmtime-wasi; loops are ELOOP
    // (32); an absolute path names a file of the sandbox, here a missing one (ENOENT, 44). A hard link to a
    // symlink links the symlink itself, which leads nowhere either.
    assert_lines(
        &output,
        &[
            "dotdot: errno Some(63)",
            "etc passwd dotdot: errno Some(63)",
            "etc passwd absolute: errno Some(44)",
            "etc passwd deep: errno Some(63)",
            "slash dotdot: errno Some(63)",
            "deep dotdot: errno Some(63)",
            "subdir dotdot: errno Some(63)",
            "list parent: errno Some(63)",
            "absolute symlink out: errno Some(63)",
            "relative symlink out: errno Some(63)",
            "symlink to dir out: errno Some(63)",
            "through dir symlink: errno Some(63)",
            "write through symlink out: errno Some(63)",
            "write through dir symlink: errno Some(63)",
            "hard link to outside: errno Some(63)",
            "hard link via symlink: ok ()",
            "read via linked symlink: errno Some(63)",
            "symlink loop: errno Some(32)",
            "self loop: errno Some(32)",
            "create symlink absolute: errno Some(63)",
            "read made_abs: errno Some(44)",
            "create symlink dotdot: ok ()",
            "read made_rel: errno Some(63)",
            "create symlink loop: ok ()",
            "read made_loop: errno Some(32)",
            "rename out: errno Some(63)",
            "mkdir out: errno Some(63)",
            r#"inside still readable: ok "inside""#,
        ],
    )?;
    ensure!(
        !stdout(&output).contains("secret"),
        "an outside file was read"
    );
    // Nothing outside the sandbox changed or appeared.
    let mut outside: Vec<String> = std::fs::read_dir(tmp.path())?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    outside.sort();
    assert_eq!(outside, ["data", "outside.txt", "root"]);
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("outside.txt"))?,
        "secret"
    );
    ensure!(!root.join("stolen.txt").exists());
    ensure!(std::fs::symlink_metadata(root.join("stolen2.txt"))?.is_symlink());
    bystander.still_works()
}

#[test]
fn bad_pointers_and_lengths_to_every_import_are_errnos() -> Result<()> {
    let (tmp, runtime, mut bystander, template) = setup(
        SandboxLimits::default(),
        "escape_pointers",
        stasis_guests::ESCAPE_POINTERS,
    )?;
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join("inside.txt"), b"x")?;
    std::os::unix::fs::symlink("inside.txt", root.join("link"))?;
    let mut sandbox = runtime.create_sandbox(
        &template,
        SandboxOptions {
            dir: Some(root.clone()),
            env: vec![("SECRET".into(), "1".into())],
            ..SandboxOptions::default()
        },
    )?;
    let output = sandbox.run(&template, &[], b"")?;
    assert_eq!(output.exit_code, 0, "{output:?}");
    let out = stdout(&output);
    let mut calls = 0;
    for line in out.lines().filter(|l| !l.starts_with("alive")) {
        let Some((name, errno)) = line.rsplit_once(": ") else {
            anyhow::bail!("unexpected line {line:?}");
        };
        let expected = match name {
            "fd_write iovs count"
            | "poll_oneoff count"
            | "clock_time_get unknown clock"
            | "fd_seek unknown whence" => EINVAL,
            "path_open huge path" => ENAMETOOLONG,
            "clock_time_get valid" => "0",
            _ => EFAULT,
        };
        ensure!(
            errno == expected,
            "{name}: errno {errno}, expected {expected}\n{out}"
        );
        calls += 1;
    }
    ensure!(calls >= 40, "too few calls ran:\n{out}");
    assert_lines(&output, &["alive, memory intact: true"])?;
    // No call with a bad pointer left anything behind.
    let mut names: Vec<String> = std::fs::read_dir(&root)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    assert_eq!(names, ["inside.txt", "link"]);
    assert_eq!(std::fs::read(root.join("inside.txt"))?, b"x");
    bystander.still_works()
}

#[test]
fn huge_and_bogus_readdir_buffers_are_bounded() -> Result<()> {
    let (_tmp, runtime, mut bystander, template) = setup(
        SandboxLimits::default(),
        "escape_readdir",
        stasis_guests::ESCAPE_READDIR,
    )?;
    let (_sandbox, output) = run_hostile(&runtime, &template, None, &[])?;
    assert_eq!(output.exit_code, 0, "{output:?}");
    // The root holds only "." and ".." (24-byte headers plus 1 and 2 name bytes).
    assert_lines(
        &output,
        &[
            "64 MiB buffer: 0 used 51",
            &format!("length past memory end: {EFAULT}"),
            &format!("buffer past memory end: {EFAULT}"),
            &format!("buffer wrapping 4 GiB: {EFAULT}"),
            &format!("bad out pointer: {EFAULT}"),
            "cookie past the end: 0 used 0",
            "entries end at 51",
        ],
    )?;
    bystander.still_works()
}

#[test]
fn memory_grow_past_the_limit_fails_and_allocation_traps() -> Result<()> {
    let limit: u64 = 32 << 20;
    let limits = SandboxLimits {
        max_memory_bytes: limit,
        ..SandboxLimits::default()
    };
    let (_tmp, runtime, mut bystander, template) =
        setup(limits, "escape_memory", stasis_guests::ESCAPE_MEMORY)?;
    let pages = (limit >> 16).to_string();
    let bytes = (limit * 2).to_string();
    let (_sandbox, output) = run_hostile(&runtime, &template, None, &[&pages, &bytes])?;
    assert_lines(
        &output,
        &[
            "grow by 4 GiB: refused",
            "grow past the limit: refused",
            &format!("allocating {bytes} bytes"),
        ],
    )?;
    ensure!(stdout(&output).contains("grow by one page: grown from"));
    ensure!(!stdout(&output).contains("allocated"));
    assert_trap(&output, "unreachable")?;
    bystander.still_works()
}

#[test]
fn memory_limit_stops_a_reactor_and_only_it() -> Result<()> {
    let limits = SandboxLimits {
        max_memory_bytes: 32 << 20,
        ..SandboxLimits::default()
    };
    let (_tmp, runtime) = runtime_with_limits(limits)?;
    let mut bystander = Bystander::new(&runtime)?;
    let mut sandbox = runtime.create_sandbox(&stateful(&runtime)?, SandboxOptions::default())?;
    // Growing memory directly past the limit fails inside the guest, which reports it.
    let error = sandbox.call("grow", b"1024").unwrap_err();
    assert!(
        matches!(error, CallError::Guest(ref m) if m.contains("memory.grow failed")),
        "{error:?}"
    );
    // An allocation past the limit aborts the guest (Rust's allocation failure is a trap).
    let error = sandbox.call("fill", b"64 1 random").unwrap_err();
    assert!(matches!(error, CallError::Trap(_)), "{error:?}");
    bystander.still_works()
}

#[test]
fn deep_recursion_is_a_stack_overflow_trap() -> Result<()> {
    let (_tmp, runtime, mut bystander, template) = setup(
        SandboxLimits::default(),
        "escape_recursion",
        stasis_guests::ESCAPE_RECURSION,
    )?;
    let (_sandbox, output) = run_hostile(&runtime, &template, None, &["wasm"])?;
    assert_trap(&output, "call stack exhausted")?;
    // Rust's stack in linear memory lies below its data: running off its end leaves memory.
    let (_sandbox, output) = run_hostile(&runtime, &template, None, &["shadow"])?;
    assert_trap(&output, "out of bounds memory access")?;
    ensure!(!stdout(&output).contains("returned"));
    bystander.still_works()
}

fn short_deadline() -> SandboxLimits {
    SandboxLimits {
        cpu_time_per_call: Duration::from_millis(200),
        ..SandboxLimits::default()
    }
}

#[test]
fn an_infinite_loop_is_stopped_at_the_cpu_deadline() -> Result<()> {
    let (_tmp, runtime, mut bystander, template) =
        setup(short_deadline(), "escape_spin", stasis_guests::ESCAPE_SPIN)?;
    let (_sandbox, output) = run_hostile(&runtime, &template, None, &["busy"])?;
    assert_trap(&output, "exceeded its CPU time limit of 200ms")?;
    bystander.still_works()
}

/// Regression: a sleep in `poll_oneoff` runs in the host, where epoch interruption does not reach, so a
/// guest sleeping for a year held its sandbox (and a server thread) for a year; now a command's wall-time
/// limit bounds host sleeps too (they do not count as CPU time).
#[test]
fn a_sleep_of_a_year_is_stopped_at_the_deadline() -> Result<()> {
    let limits = SandboxLimits {
        wall_time_per_command: Duration::from_millis(300),
        ..short_deadline()
    };
    let (_tmp, runtime, mut bystander, template) =
        setup(limits, "escape_spin", stasis_guests::ESCAPE_SPIN)?;
    let (mut sandbox, output) = run_hostile(&runtime, &template, None, &["sleep"])?;
    assert_trap(&output, "exceeded its wall-time limit of 300ms")?;
    ensure!(!stdout(&output).contains("woke up"));
    // The sandbox itself is usable again at once.
    let again = sandbox.run(&template, &["nothing".into()], b"")?;
    assert_trap(&again, "unreachable")?;
    ensure!(String::from_utf8_lossy(&again.stderr).contains("unknown mode"));
    bystander.still_works()
}

#[test]
fn a_runaway_reactor_call_times_out_and_poisons_only_its_process() -> Result<()> {
    let (_tmp, runtime) = runtime_with_limits(short_deadline())?;
    let mut bystander = Bystander::new(&runtime)?;
    let template = stateful(&runtime)?;
    let mut looping = runtime.create_sandbox(&template, SandboxOptions::default())?;
    let error = looping.call("spin", b"").unwrap_err();
    assert!(matches!(error, CallError::Timeout(_)), "{error:?}");
    assert!(matches!(
        looping.call("bump", b"").unwrap_err(),
        CallError::Poisoned(1)
    ));
    bystander.still_works()?;
    // A fresh process in the same sandbox works again.
    assert!(looping.kill_process(1));
    let pid = looping.spawn(&template)?;
    assert_eq!(
        String::from_utf8(looping.call_process(pid, "bump", b"")?)?,
        "1 1"
    );
    Ok(())
}

fn quota_limits(max_disk_bytes: u64, max_files: u64) -> SandboxLimits {
    SandboxLimits {
        max_disk_bytes,
        max_files,
        ..SandboxLimits::default()
    }
}

/// Runs the quota guest in `mode` in a sandbox rooted at `tmp/root`, where `existing` already holds
/// `existing_bytes` bytes.
fn run_quota(
    limits: SandboxLimits,
    mode: &str,
    existing_bytes: usize,
) -> Result<(TempDir, PathBuf, Bystander, CommandOutput)> {
    let (tmp, runtime, bystander, template) =
        setup(limits, "escape_quota", stasis_guests::ESCAPE_QUOTA)?;
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join("existing"), vec![7u8; existing_bytes])?;
    let (_sandbox, output) = run_hostile(&runtime, &template, Some(root.clone()), &[mode])?;
    assert_eq!(output.exit_code, 0, "{output:?}");
    Ok((tmp, root, bystander, output))
}

#[test]
fn filling_the_disk_is_enospc_and_leaves_other_files_intact() -> Result<()> {
    // Existing content counts: 2000 of the 10000 bytes are used before the guest starts.
    let (_tmp, root, mut bystander, output) = run_quota(quota_limits(10_000, 1000), "bytes", 2000)?;
    assert_lines(
        &output,
        &[
            "write: 8000 then errno 51",
            "fd_pwrite past end: Err(51)",
            "fd_pwrite inside: Ok(1)",
            "set_len grow: errno Some(51)",
            "fd_allocate: Err(51)",
            "set_len shrink: ok ()",
            "write after shrink: ok ()",
            "write after remove: ok ()",
        ],
    )?;
    assert_eq!(std::fs::read(root.join("existing"))?, vec![7u8; 2000]);
    assert_eq!(std::fs::metadata(root.join("small"))?.len(), 3000);
    bystander.still_works()
}

#[test]
fn creating_files_without_bound_is_edquot() -> Result<()> {
    let (_tmp, root, mut bystander, output) = run_quota(quota_limits(1 << 20, 5), "files", 10)?;
    assert_lines(
        &output,
        &[
            "create: 4 then errno 19",
            "mkdir: errno Some(19)",
            "symlink: errno Some(19)",
            "hard link: errno Some(19)",
            "open existing: ok ()",
            "remove: ok ()",
            "create after remove: ok ()",
        ],
    )?;
    assert_eq!(std::fs::read(root.join("existing"))?, vec![7u8; 10]);
    bystander.still_works()
}

#[test]
fn opening_fds_without_bound_is_emfile() -> Result<()> {
    let limits = SandboxLimits {
        max_open_fds: 10,
        ..SandboxLimits::default()
    };
    let (_tmp, _root, mut bystander, output) = run_quota(limits, "fds", 0)?;
    // stdio and the root take 4 of the 10.
    assert_lines(
        &output,
        &["open: 6 then errno 33", "open after close: ok ()"],
    )?;
    bystander.still_works()
}

#[test]
fn an_overlong_path_is_enametoolong() -> Result<()> {
    let limits = SandboxLimits {
        max_path_len: 1000,
        ..SandboxLimits::default()
    };
    let (_tmp, _root, mut bystander, output) = run_quota(limits, "path", 0)?;
    assert_lines(
        &output,
        &[
            "long path: errno Some(37)",
            "long mkdir: errno Some(37)",
            "short path: errno Some(44)",
        ],
    )?;
    bystander.still_works()
}

#[test]
fn a_response_past_the_limit_is_refused_and_the_process_stays_usable() -> Result<()> {
    let limits = SandboxLimits {
        max_response_bytes: 100,
        ..SandboxLimits::default()
    };
    let (_tmp, runtime) = runtime_with_limits(limits)?;
    let mut bystander = Bystander::new(&runtime)?;
    let mut sandbox = runtime.create_sandbox(&stateful(&runtime)?, SandboxOptions::default())?;
    call(&mut sandbox, "remember", &"x".repeat(200))?;
    let error = sandbox.call("recall", b"").unwrap_err();
    assert!(
        matches!(error, CallError::ResponseTooLarge { limit: 100, .. }),
        "{error:?}"
    );
    assert_eq!(call(&mut sandbox, "bump", "")?, "1 1");
    bystander.still_works()
}

#[test]
fn spawning_past_the_process_limit_is_refused() -> Result<()> {
    let limits = SandboxLimits {
        max_processes: 2,
        ..SandboxLimits::default()
    };
    let (_tmp, runtime) = runtime_with_limits(limits)?;
    let mut bystander = Bystander::new(&runtime)?;
    let template = stateful(&runtime)?;
    let mut sandbox = runtime.create_sandbox(&template, SandboxOptions::default())?;
    let second = sandbox.spawn(&template)?;
    let error = sandbox.spawn(&template).unwrap_err();
    assert!(
        matches!(error, SpawnError::TooManyProcesses(2)),
        "{error:?}"
    );
    assert_eq!(sandbox.pids(), [1, second]);
    bystander.still_works()
}

/// The defaults the README's "Resource limits" table states; change both together.
#[test]
fn the_defaults_are_those_the_readme_states() {
    let limits = SandboxLimits::default();
    assert_eq!(limits.max_memory_bytes, 2 << 30);
    assert_eq!(limits.cpu_time_per_call, Duration::from_secs(30));
    assert_eq!(limits.wall_time_per_command, Duration::from_secs(3600));
    assert_eq!(limits.max_disk_bytes, 1 << 30);
    assert_eq!(limits.max_files, 100_000);
    assert_eq!(limits.max_open_fds, 1024);
    assert_eq!(limits.max_path_len, 4096);
    assert_eq!(limits.max_output_bytes, 16 << 20);
    assert_eq!(limits.max_response_bytes, 64 << 20);
    assert_eq!(limits.max_processes, 64);
    let manager = ManagerConfig::default();
    assert_eq!(manager.default_timeout, Duration::from_secs(300));
    assert_eq!(manager.max_running, 256);
    assert_eq!(manager.max_paused, 100_000);
    assert_eq!(manager.min_free_disk, 256 << 20);
    assert_eq!(MAX_FORK, 100);
}

#[test]
fn every_escape_guest_has_a_containment_test() {
    // Extend this list together with a test whenever an `escape_*` guest is added.
    let tested = [
        "escape_memory",
        "escape_paths",
        "escape_pointers",
        "escape_quota",
        "escape_readdir",
        "escape_recursion",
        "escape_spin",
    ];
    let guests: Vec<&str> = stasis_guests::ALL
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| n.starts_with("escape_"))
        .collect();
    assert_eq!(guests, tested);
}
