//! A guest's whole state survives pause → blob → resume: heap, statics, atomics, every mutable global
//! (exported or not, the shadow stack pointer included), grown memory, open files and offsets, files on disk.

use anyhow::Result;
use stasis::{CallError, PauseError, ResumeError, ResumeOptions, SandboxOptions};
use wasmtime::Val;

use crate::common::{call, runtime, stateful};

#[test]
fn heap_statics_and_atomics_survive() -> Result<()> {
    let (tmp, runtime) = runtime()?;
    let mut sandbox = runtime.create_sandbox(&stateful(&runtime)?, SandboxOptions::default())?;
    for _ in 0..3 {
        call(&mut sandbox, "bump", "")?;
    }
    call(&mut sandbox, "remember", "alpha")?;
    call(&mut sandbox, "remember", "beta")?;
    let digest = sandbox.memory_digest(1).expect("process 1 is alive");
    let blob = tmp.path().join("sandbox.blob");
    let report = sandbox.pause(&blob)?;
    assert!(sandbox.is_paused());
    assert_eq!(report.processes, 1);
    assert!(
        report.blob_bytes > 0 && report.blob_bytes < report.memory_bytes,
        "zero pages are not stored"
    );

    let mut resumed = runtime.resume(&blob, ResumeOptions::default())?;
    assert_eq!(
        resumed.memory_digest(1),
        Some(digest),
        "memory is restored bit for bit"
    );
    assert_eq!(call(&mut resumed, "recall", "")?, "alpha,beta");
    assert_eq!(call(&mut resumed, "bump", "")?, "4 4");
    Ok(())
}

#[test]
fn memory_grown_after_start_survives() -> Result<()> {
    let (tmp, runtime) = runtime()?;
    let mut sandbox = runtime.create_sandbox(&stateful(&runtime)?, SandboxOptions::default())?;
    let first_new_page: u64 = call(&mut sandbox, "grow", "3")?.parse()?;
    let blob = tmp.path().join("grown.blob");
    sandbox.pause(&blob)?;
    let mut resumed = runtime.resume(&blob, ResumeOptions::default())?;
    assert_eq!(
        call(&mut resumed, "peek_page", &first_new_page.to_string())?,
        "165"
    );
    assert_eq!(
        call(&mut resumed, "peek_page", &(first_new_page + 1).to_string())?,
        "0"
    );
    assert_eq!(
        call(&mut resumed, "grow", "1")?,
        (first_new_page + 3).to_string()
    );
    Ok(())
}

#[test]
fn open_file_continues_at_its_offset() -> Result<()> {
    let (tmp, runtime) = runtime()?;
    let mut sandbox = runtime.create_sandbox(&stateful(&runtime)?, SandboxOptions::default())?;
    call(&mut sandbox, "open", "/data.txt")?;
    assert_eq!(call(&mut sandbox, "write", "hello world")?, "11");
    call(&mut sandbox, "seek", "6")?;
    let blob = tmp.path().join("file.blob");
    sandbox.pause(&blob)?;

    let mut resumed = runtime.resume(&blob, ResumeOptions::default())?;
    assert_eq!(call(&mut resumed, "read", "5")?, "world");
    assert_eq!(call(&mut resumed, "write", "!")?, "12");
    assert_eq!(
        std::fs::read_to_string(resumed.dir().join("data.txt"))?,
        "hello world!"
    );
    Ok(())
}

#[test]
fn files_created_and_removed_survive() -> Result<()> {
    let (tmp, runtime) = runtime()?;
    let mut sandbox = runtime.create_sandbox(&stateful(&runtime)?, SandboxOptions::default())?;
    call(&mut sandbox, "put_file", "/tmp/message.txt\nhello")?;
    call(
        &mut sandbox,
        "put_file",
        "/work/deep/nested/file.txt\nnested",
    )?;
    call(&mut sandbox, "put_file", "/doomed.txt\nbye")?;
    call(&mut sandbox, "remove_file", "/doomed.txt")?;
    let blob = tmp.path().join("files.blob");
    let old_dir = sandbox.dir().to_owned();
    sandbox.pause(&blob)?;
    assert!(
        !old_dir.exists(),
        "a paused sandbox's directory is released; the blob holds its files"
    );

    let mut resumed = runtime.resume(&blob, ResumeOptions::default())?;
    assert_eq!(call(&mut resumed, "get_file", "/tmp/message.txt")?, "hello");
    assert_eq!(
        call(&mut resumed, "get_file", "/work/deep/nested/file.txt")?,
        "nested"
    );
    assert!(resumed.call("get_file", b"/doomed.txt").is_err());
    assert!(!resumed.dir().join("doomed.txt").exists());
    Ok(())
}

/// E2B #736 and #884: state lost on the second resume. Ten cycles, state checked after each.
#[test]
fn ten_pause_resume_cycles_keep_everything() -> Result<()> {
    let (tmp, runtime) = runtime()?;
    let mut sandbox = runtime.create_sandbox(&stateful(&runtime)?, SandboxOptions::default())?;
    call(&mut sandbox, "open", "/log.txt")?;
    for cycle in 1..=10u32 {
        assert_eq!(call(&mut sandbox, "bump", "")?, format!("{cycle} {cycle}"));
        call(&mut sandbox, "remember", &format!("n{cycle}"))?;
        call(&mut sandbox, "write", &format!("{cycle};"))?;
        call(
            &mut sandbox,
            "put_file",
            &format!("/cycles/{cycle}.txt\n{cycle}"),
        )?;
        let blob = tmp.path().join(format!("cycle-{cycle}.blob"));
        sandbox.pause(&blob)?;
        sandbox = runtime.resume(&blob, ResumeOptions::default())?;
        let notes: Vec<String> = (1..=cycle).map(|n| format!("n{n}")).collect();
        assert_eq!(call(&mut sandbox, "recall", "")?, notes.join(","));
        for n in 1..=cycle {
            assert_eq!(
                call(&mut sandbox, "get_file", &format!("/cycles/{n}.txt"))?,
                n.to_string()
            );
        }
    }
    let log: String = (1..=10).map(|n| format!("{n};")).collect();
    assert_eq!(call(&mut sandbox, "get_file", "/log.txt")?, log);
    Ok(())
}

/// A module with non-exported mutable globals of every number type and a shadow stack pointer it moves
/// on purpose, so that a pause sees it away from its initial value.
const GLOBALS_WAT: &str = r#"
(module
  (memory (export "memory") 1)
  (global $__stack_pointer (mut i32) (i32.const 65536))
  (global $count (mut i64) (i64.const 0))
  (global $f (mut f32) (f32.const 0))
  (global $d (mut f64) (f64.const 0))
  (data (i32.const 16) "initial data segment")
  (func (export "bump") (result i64)
    (global.set $count (i64.add (global.get $count) (i64.const 1)))
    (global.get $count))
  (func (export "set_floats")
    (global.set $f (f32.reinterpret_i32 (i32.const 0x7fc01234)))
    (global.set $d (f64.reinterpret_i64 (i64.const 0x7ff8000000abcdef))))
  (func (export "float_bits") (result i32 i64)
    (i32.reinterpret_f32 (global.get $f))
    (i64.reinterpret_f64 (global.get $d)))
  (func (export "push") (param i32)
    (global.set $__stack_pointer (i32.sub (global.get $__stack_pointer) (i32.const 16)))
    (i32.store (global.get $__stack_pointer) (local.get 0)))
  (func (export "top") (result i32 i32)
    (global.get $__stack_pointer)
    (i32.load (global.get $__stack_pointer)))
  (func (export "clear_data")
    (memory.fill (i32.const 16) (i32.const 0) (i32.const 20)))
  (func (export "data_byte") (result i32)
    (i32.load8_u (i32.const 16)))
)
"#;

#[test]
fn non_exported_globals_and_the_stack_pointer_survive() -> Result<()> {
    let (tmp, runtime) = runtime()?;
    let template = runtime.load_template("globals", &wat::parse_str(GLOBALS_WAT)?)?;
    let mut sandbox = runtime.create_sandbox(&template, SandboxOptions::default())?;
    for _ in 0..5 {
        sandbox.invoke(1, "bump", &[])?;
    }
    sandbox.invoke(1, "set_floats", &[])?;
    sandbox.invoke(1, "push", &[Val::I32(1234)])?;
    sandbox.invoke(1, "push", &[Val::I32(5678)])?;
    // The data segment's bytes were wiped: resume must not bring them back from the module.
    sandbox.invoke(1, "clear_data", &[])?;
    let blob = tmp.path().join("globals.blob");
    sandbox.pause(&blob)?;

    let mut resumed = runtime.resume(&blob, ResumeOptions::default())?;
    let top = resumed.invoke(1, "top", &[])?;
    assert_eq!(
        (top[0].unwrap_i32(), top[1].unwrap_i32()),
        (65536 - 32, 5678)
    );
    assert_eq!(resumed.invoke(1, "bump", &[])?[0].unwrap_i64(), 6);
    let bits = resumed.invoke(1, "float_bits", &[])?;
    assert_eq!(
        bits[0].unwrap_i32() as u32,
        0x7fc0_1234,
        "f32 NaN payload kept"
    );
    assert_eq!(
        bits[1].unwrap_i64() as u64,
        0x7ff8_0000_00ab_cdef,
        "f64 NaN payload kept"
    );
    assert_eq!(resumed.invoke(1, "data_byte", &[])?[0].unwrap_i32(), 0);
    Ok(())
}

#[test]
fn pausing_twice_and_calling_a_paused_sandbox_are_errors() -> Result<()> {
    let (tmp, runtime) = runtime()?;
    let mut sandbox = runtime.create_sandbox(&stateful(&runtime)?, SandboxOptions::default())?;
    sandbox.pause(&tmp.path().join("a.blob"))?;
    assert!(matches!(
        sandbox.pause(&tmp.path().join("b.blob")),
        Err(PauseError::AlreadyPaused)
    ));
    assert!(!tmp.path().join("b.blob").exists());
    assert!(matches!(sandbox.call("bump", b""), Err(CallError::Paused)));
    Ok(())
}

#[test]
fn a_snapshot_keeps_the_sandbox_running_and_forks_independent_copies() -> Result<()> {
    let (tmp, runtime) = runtime()?;
    let mut sandbox = runtime.create_sandbox(&stateful(&runtime)?, SandboxOptions::default())?;
    call(&mut sandbox, "bump", "")?;
    let blob = tmp.path().join("snap.blob");
    sandbox.snapshot(&blob, &Default::default())?;
    assert_eq!(call(&mut sandbox, "bump", "")?, "2 2");
    let mut fork_a = runtime.resume(&blob, ResumeOptions::default())?;
    let mut fork_b = runtime.resume(&blob, ResumeOptions::default())?;
    assert_eq!(call(&mut fork_a, "bump", "")?, "2 2");
    assert_eq!(call(&mut fork_a, "bump", "")?, "3 3");
    assert_eq!(call(&mut fork_b, "bump", "")?, "2 2");
    Ok(())
}

#[test]
fn resume_refuses_a_blob_of_another_module() -> Result<()> {
    let (tmp, runtime) = runtime()?;
    let mut sandbox = runtime.create_sandbox(&stateful(&runtime)?, SandboxOptions::default())?;
    let blob = tmp.path().join("s.blob");
    sandbox.pause(&blob)?;
    let other = runtime.load_template("globals", &wat::parse_str(GLOBALS_WAT)?)?;
    let dir = tmp.path().join("target-dir");
    let options = ResumeOptions {
        template: Some(other),
        dir: Some(dir.clone()),
        ..Default::default()
    };
    assert!(matches!(
        runtime.resume(&blob, options),
        Err(ResumeError::ModuleMismatch { .. })
    ));
    Ok(())
}

#[test]
fn resume_refuses_a_module_it_does_not_know() -> Result<()> {
    let (tmp, runtime) = runtime()?;
    let mut sandbox = runtime.create_sandbox(&stateful(&runtime)?, SandboxOptions::default())?;
    let blob = tmp.path().join("s.blob");
    sandbox.pause(&blob)?;
    let (_tmp2, fresh_runtime) = crate::common::runtime()?;
    assert!(matches!(
        fresh_runtime.resume(&blob, ResumeOptions::default()),
        Err(ResumeError::UnknownModule(_))
    ));
    Ok(())
}

#[test]
fn resume_refuses_a_non_empty_directory_and_keeps_its_content() -> Result<()> {
    let (tmp, runtime) = runtime()?;
    let mut sandbox = runtime.create_sandbox(&stateful(&runtime)?, SandboxOptions::default())?;
    let blob = tmp.path().join("s.blob");
    sandbox.pause(&blob)?;
    let dir = tmp.path().join("occupied");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("precious.txt"), "keep me")?;
    let options = ResumeOptions {
        dir: Some(dir.clone()),
        ..Default::default()
    };
    assert!(matches!(
        runtime.resume(&blob, options),
        Err(ResumeError::DirNotEmpty(_))
    ));
    assert_eq!(
        std::fs::read_to_string(dir.join("precious.txt"))?,
        "keep me"
    );
    Ok(())
}

#[test]
fn resume_refuses_a_corrupt_blob_and_leaves_nothing_behind() -> Result<()> {
    let (tmp, runtime) = runtime()?;
    let mut sandbox = runtime.create_sandbox(&stateful(&runtime)?, SandboxOptions::default())?;
    call(&mut sandbox, "put_file", "/f.txt\ncontent")?;
    let blob = tmp.path().join("s.blob");
    sandbox.pause(&blob)?;
    let mut bytes = std::fs::read(&blob)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&blob, &bytes)?;
    let sandboxes = runtime.config().data_dir.join("scratch");
    let before = std::fs::read_dir(&sandboxes)?.count();
    assert!(matches!(
        runtime.resume(&blob, ResumeOptions::default()),
        Err(ResumeError::Decode(_))
    ));
    assert_eq!(std::fs::read_dir(&sandboxes)?.count(), before);
    Ok(())
}

/// Resuming maps memory copy-on-write from the blob instead of copying it: the blob file shows up in the
/// process's memory map, and the guest's writes after the resume never reach the file.
#[cfg(target_os = "linux")]
#[test]
fn resumed_memory_is_mapped_copy_on_write_from_the_blob() -> Result<()> {
    use sha2::{Digest, Sha256};

    let (tmp, runtime) = runtime()?;
    let mut sandbox = runtime.create_sandbox(&stateful(&runtime)?, SandboxOptions::default())?;
    call(&mut sandbox, "fill", "8 3 random")?;
    let blob = tmp.path().join("mapped-copy-on-write.blob");
    sandbox.pause(&blob)?;
    let blob_digest = Sha256::digest(std::fs::read(&blob)?);

    let mut resumed = runtime.resume(&blob, ResumeOptions::default())?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    assert!(
        maps.contains("mapped-copy-on-write.blob"),
        "the blob's pages are mapped into the guest memory"
    );
    call(&mut resumed, "dirty", "8 99")?;
    call(&mut resumed, "bump", "")?;
    assert_eq!(
        Sha256::digest(std::fs::read(&blob)?),
        blob_digest,
        "guest writes never reach the blob"
    );

    // Deleting the blob (as the lifecycle does after a resume) leaves the mapped memory intact.
    let digest = resumed.memory_digest(1);
    std::fs::remove_file(&blob)?;
    assert_eq!(resumed.memory_digest(1), digest);
    assert_eq!(call(&mut resumed, "bump", "")?, "2 2");
    Ok(())
}

/// A blob of the previous format (2.0, committed in `tests/data`, paused by the Stasis of that format before
/// the unwind stage existed) still resumes: the guest's counter in memory and in a global continue, its file
/// is there, and the unwind stage's state this Stasis adds to the module starts fresh.
#[test]
fn a_format_2_0_blob_still_resumes() -> Result<()> {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let blob = data.join("v2-reactor.blob");
    let header = stasis::snapshot::peek_header(&std::fs::read(&blob)?)?;
    assert_eq!((header.format_major, header.format_minor), (2, 0));
    let (_tmp, runtime) = runtime()?;
    let template =
        runtime.load_template("v2-reactor", &wat::parse_file(data.join("v2-reactor.wat"))?)?;
    assert!(
        template.unwind_layout().is_some(),
        "this Stasis rewrites the module"
    );
    let mut sandbox = runtime.resume(&blob, ResumeOptions::default())?;
    let pid = sandbox.pids()[0];
    // Three bumps before the pause: calls = 3, memory[0] = 1 + 2 + 3.
    assert_eq!(sandbox.invoke(pid, "bump", &[])?[0].i32(), Some(4010));
    assert_eq!(
        std::fs::read_to_string(sandbox.dir().join("note.txt"))?,
        "written before the pause\n"
    );
    // And it pauses again in the current format.
    let tmp = tempfile::tempdir()?;
    sandbox.pause(&tmp.path().join("again.blob"))?;
    let again = stasis::snapshot::peek_header(&std::fs::read(tmp.path().join("again.blob"))?)?;
    assert_eq!(again.format_minor, stasis::snapshot::FORMAT_MINOR);
    let mut resumed = runtime.resume(&tmp.path().join("again.blob"), ResumeOptions::default())?;
    assert_eq!(resumed.invoke(pid, "bump", &[])?[0].i32(), Some(5015));
    Ok(())
}

/// A blob of format 2.1 (committed in `tests/data`, paused by the Stasis of that format, before a sandbox's
/// kernel was saved state) still resumes: its reactor's counters continue, its file is there, it has no
/// children, and it pauses again in the current format.
#[test]
fn a_format_2_1_blob_still_resumes() -> Result<()> {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let blob = data.join("v2.1-reactor.blob");
    let header = stasis::snapshot::peek_header(&std::fs::read(&blob)?)?;
    assert_eq!((header.format_major, header.format_minor), (2, 1));
    let (_tmp, runtime) = runtime()?;
    runtime.load_template("v2-reactor", &wat::parse_file(data.join("v2-reactor.wat"))?)?;
    let mut sandbox = runtime.resume(&blob, ResumeOptions::default())?;
    let pid = sandbox.pids()[0];
    // Two bumps before the pause: calls = 2, memory[0] = 1 + 2.
    assert_eq!(sandbox.invoke(pid, "bump", &[])?[0].i32(), Some(3006));
    assert_eq!(
        std::fs::read_to_string(sandbox.dir().join("note.txt"))?,
        "written before the 2.1 pause\n"
    );
    assert!(sandbox.children().is_empty());
    let tmp = tempfile::tempdir()?;
    sandbox.pause(&tmp.path().join("again.blob"))?;
    let again = stasis::snapshot::peek_header(&std::fs::read(tmp.path().join("again.blob"))?)?;
    assert_eq!(again.format_minor, stasis::snapshot::FORMAT_MINOR);
    let mut resumed = runtime.resume(&tmp.path().join("again.blob"), ResumeOptions::default())?;
    assert_eq!(resumed.invoke(pid, "bump", &[])?[0].i32(), Some(4010));
    Ok(())
}

/// A blob of format 2.2 (committed in `tests/data`, paused by the Stasis of that format, before a sandbox's
/// network was saved state) still resumes: its reactor's counters continue, its file is there, it listens on
/// no port and has the default egress policy, and it pauses again in the current format.
#[test]
fn a_format_2_2_blob_still_resumes() -> Result<()> {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let blob = data.join("v2.2-reactor.blob");
    let header = stasis::snapshot::peek_header(&std::fs::read(&blob)?)?;
    assert_eq!((header.format_major, header.format_minor), (2, 2));
    let (_tmp, runtime) = runtime()?;
    runtime.load_template("v2-reactor", &wat::parse_file(data.join("v2-reactor.wat"))?)?;
    let mut sandbox = runtime.resume(&blob, ResumeOptions::default())?;
    let pid = sandbox.pids()[0];
    // Four bumps before the pause: calls = 4, memory[0] = 1 + 2 + 3 + 4.
    assert_eq!(sandbox.invoke(pid, "bump", &[])?[0].i32(), Some(5015));
    assert_eq!(
        std::fs::read_to_string(sandbox.dir().join("note.txt"))?,
        "written before the 2.2 pause\n"
    );
    assert!(sandbox.children().is_empty());
    assert!(sandbox.listening_ports().is_empty());
    assert_eq!(sandbox.egress_policy(), stasis::EgressPolicy::default());
    let tmp = tempfile::tempdir()?;
    sandbox.pause(&tmp.path().join("again.blob"))?;
    let again = stasis::snapshot::peek_header(&std::fs::read(tmp.path().join("again.blob"))?)?;
    assert_eq!(again.format_minor, stasis::snapshot::FORMAT_MINOR);
    let mut resumed = runtime.resume(&tmp.path().join("again.blob"), ResumeOptions::default())?;
    assert_eq!(resumed.invoke(pid, "bump", &[])?[0].i32(), Some(6021));
    Ok(())
}
