//! Pre-initialised program images: a program that exports `preinit` starts from the image made by running it
//! once, not from scratch. A WAT probe shows which start each run had (its exit status says), and that a
//! failing `preinit` or a damaged image file costs nothing but speed; the Python guest is compared run for
//! run with images on and off, through the shell, on what a program can see of its world.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, ensure};
use stasis::{Runtime, RuntimeConfig, Sandbox, SandboxLimits, SandboxOptions, Template};
use tempfile::TempDir;

use crate::common::shared_cache_dir;

/// A program that answers 111 when it runs from its image (its `preinit` ran and left its mark in memory and
/// in a global, and `_initialize` ran exactly once), 1 when it starts fresh, and 2 when `_initialize` ran
/// twice (on top of the image). `PREINIT_BODY` is spliced in: what its `preinit` does before it answers.
const PROBE: &str = r#"
(module
  (memory (export "memory") 1)
  (global $inits (mut i32) (i32.const 0))
  (global $pre (mut i32) (i32.const 0))
  (data (i32.const 16) "\00111")
  (data (i32.const 32) "\001")
  (data (i32.const 48) "\00")
  (data (i32.const 64) "\002")
  (func (export "_initialize")
    global.get $inits
    i32.const 1
    i32.add
    global.set $inits)
  (func (export "stasis_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "stasis_free") (param i32 i32))
  (func (export "stasis_handle_preinit") (param i32 i32) (result i64)
    PREINIT_BODY
    i32.const 1
    global.set $pre
    i32.const 2048
    i32.const 7
    i32.store
    i64.const 206158430209) ;; 48 << 32 | 1: an empty OK response
  (func (export "stasis_handle_main") (param i32 i32) (result i64)
    global.get $inits
    i32.const 1
    i32.ne
    if
      i64.const 274877906946 ;; 64 << 32 | 2: "2"
      return
    end
    global.get $pre
    i32.const 2048
    i32.load
    i32.const 7
    i32.eq
    i32.and
    if (result i64)
      i64.const 68719476740 ;; 16 << 32 | 4: "111"
    else
      i64.const 137438953474 ;; 32 << 32 | 2: "1"
    end))
"#;

/// The status of a run from the image, and of a fresh start.
const FROM_IMAGE: i32 = 111;
const FRESH: i32 = 1;

/// A runtime (with its own cache directory) where the probe and `sh` are programs.
struct Probe {
    tmp: TempDir,
    runtime: Runtime,
    sh: Template,
    sandbox: Sandbox,
}

impl Probe {
    fn new(preinit_body: &str, images: bool) -> Result<Self> {
        let tmp = tempfile::tempdir()?;
        Self::in_dir(tmp, preinit_body, images)
    }

    /// A runtime on `tmp`'s data directory: a second one on the same directory finds the first's images.
    fn in_dir(tmp: TempDir, preinit_body: &str, images: bool) -> Result<Self> {
        let mut config = RuntimeConfig::new(tmp.path().join("data"));
        config.preinit_programs = images;
        config.limits = SandboxLimits {
            cpu_time_per_call: std::time::Duration::from_millis(500),
            ..SandboxLimits::default()
        };
        let runtime = Runtime::new(config)?;
        let wasm = wat::parse_str(PROBE.replace("PREINIT_BODY", preinit_body))?;
        let probe = runtime.load_template("probe", &wasm)?;
        runtime.register_program("probe", probe.sha256());
        let sh = runtime.load_template("sh", &stasis_guests::bytes(stasis_guests::SH))?;
        runtime.register_program("sh", sh.sha256());
        let sandbox = runtime.create_sandbox(&sh, SandboxOptions::default())?;
        Ok(Self {
            tmp,
            runtime,
            sh,
            sandbox,
        })
    }

    /// The probe's exit status, run by the shell.
    fn status(&mut self) -> Result<i32> {
        let out = self
            .sandbox
            .run(&self.sh, &["-c".into(), "probe".into()], b"")?;
        ensure!(
            out.trap.is_none(),
            "the shell trapped: {:?} ({})",
            out.trap,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(out.exit_code)
    }

    /// The image files in the runtime's cache directory.
    fn images(&self) -> Result<Vec<PathBuf>> {
        image_files(&self.runtime.config().cache_dir())
    }
}

fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("image-") && name.ends_with(".blob") {
            found.push(path);
        }
    }
    Ok(found)
}

#[test]
fn a_program_starts_from_its_image_and_does_not_initialise_again() -> Result<()> {
    let mut probe = Probe::new("", true)?;
    ensure!(probe.runtime.prepare_program("probe"), "no image was made");
    for run in 0..3 {
        let status = probe.status()?;
        ensure!(
            status == FROM_IMAGE,
            "run {run} had status {status}, not the image's {FROM_IMAGE}"
        );
    }
    ensure!(probe.images()?.len() == 1, "one image file per module");
    // A program with no `preinit` has no image; a name no program has neither.
    ensure!(!probe.runtime.prepare_program("sh"));
    ensure!(!probe.runtime.prepare_program("no-such-program"));
    Ok(())
}

#[test]
fn without_images_or_with_a_failing_preinit_a_program_starts_fresh() -> Result<()> {
    let mut off = Probe::new("", false)?;
    ensure!(!off.runtime.prepare_program("probe"));
    ensure!(off.status()? == FRESH, "images off");
    ensure!(off.images()?.is_empty());

    // A `preinit` that traps, and one that never returns (the CPU budget ends it).
    for body in ["unreachable", "(loop (br 0))"] {
        let mut failing = Probe::new(body, true)?;
        ensure!(!failing.runtime.prepare_program("probe"), "{body}");
        for _ in 0..2 {
            let status = failing.status()?;
            ensure!(status == FRESH, "{body}: status {status}");
        }
        ensure!(
            failing.images()?.is_empty(),
            "{body}: an image file was left"
        );
    }
    Ok(())
}

#[test]
fn a_damaged_image_file_is_made_again() -> Result<()> {
    let first = Probe::new("", true)?;
    ensure!(first.runtime.prepare_program("probe"));
    let path = first
        .images()?
        .into_iter()
        .next()
        .context("no image file")?;
    let good = std::fs::read(&path)?;
    let Probe { tmp, .. } = first;
    let tmp_path = tmp.path().to_owned();
    let mut tmp = Some(tmp);
    let damaged: Vec<(&str, Vec<u8>)> = vec![
        ("one byte flipped", {
            let mut bytes = good.clone();
            let at = bytes.len() / 2;
            bytes[at] ^= 0x40;
            bytes
        }),
        ("cut to a third", good[..good.len() / 3].to_vec()),
        ("empty", Vec::new()),
    ];
    for (what, bytes) in damaged {
        std::fs::write(&path, &bytes)?;
        // A new runtime on the same data directory reads the file instead of making the image.
        let mut probe = Probe::in_dir(tmp.take().context("data directory")?, "", true)?;
        let status = probe.status()?;
        ensure!(status == FROM_IMAGE, "{what}: status {status}");
        ensure!(
            std::fs::read(&path)? == good,
            "{what}: the image made again differs from the first"
        );
        ensure!(probe.tmp.path() == tmp_path);
        tmp = Some(probe.tmp);
    }
    Ok(())
}

/// A shell sandbox of a runtime where `python3` and `python` are programs, with images on or off.
struct Shell {
    _tmp: TempDir,
    sh: Template,
    sandbox: Sandbox,
}

impl Shell {
    fn python(images: bool) -> Result<Self> {
        let tmp = tempfile::tempdir()?;
        let mut config = RuntimeConfig::new(tmp.path().join("data"));
        config.cache_dir = Some(shared_cache_dir());
        config.preinit_programs = images;
        let runtime = Runtime::new(config)?;
        let python = crate::common::python_named(&runtime, "python3")?;
        runtime.register_program("python3", python.sha256());
        runtime.register_program("python", python.sha256());
        let sh = runtime.load_template("sh", &stasis_guests::bytes(stasis_guests::SH))?;
        runtime.register_program("sh", sh.sha256());
        ensure!(runtime.prepare_program("python3") == images);
        let sandbox = runtime.create_sandbox(&sh, SandboxOptions::default())?;
        Ok(Self {
            _tmp: tmp,
            sh,
            sandbox,
        })
    }

    /// `sh -c line` with `stdin`: (status, stdout, stderr).
    fn run(&mut self, line: &str, stdin: &[u8]) -> Result<(i32, String, String)> {
        let out = self
            .sandbox
            .run(&self.sh, &["-c".into(), line.into()], stdin)?;
        Ok((
            out.exit_code,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}

/// Files the compared programs use, made with the shell in both sandboxes.
const SETUP: &str = "mkdir -p /w/lib /w/pkg && cd /w && \
    echo 'V = 5' > /w/lib/mod1.py && \
    echo 'import sys; print(\"main\", __file__, sys.argv, sys.path[0], __name__)' > /w/main.py && \
    echo 'print(\"pkg main\", __name__)' > /w/pkg/__main__.py";

/// Command lines whose status and output must not depend on whether `python3` started from its image.
const LINES: &[(&str, &str)] = &[
    (
        "python3 -c 'import sys; print(sys.argv, sys.orig_argv)' a 'b c'",
        "",
    ),
    (
        "python -c 'import sys; print(sys.executable, sys._base_executable, sys.argv)'",
        "",
    ),
    (
        "python3 -c 'import sys; print(sys.executable, sys.prefix, sys.exec_prefix)'",
        "",
    ),
    (
        "X=1 python3 -c 'import os; print(os.environ.get(\"X\"), os.environb.get(b\"X\"), os.getenv(\"HOME\"), \"X\" in os.environ)'",
        "",
    ),
    (
        "python3 -c 'import os; print(sorted(k for k in os.environ if k != \"PWD\"))'",
        "",
    ),
    (
        "cd /w/lib && python3 -c 'import os; print(os.getcwd(), os.listdir(\".\"))'",
        "",
    ),
    (
        "cd /w && PYTHONPATH=/w/lib:rel python3 -c 'import sys, mod1; print(sys.path, mod1.V)'",
        "",
    ),
    ("python3 -c 'import sys; print(sys.flags)'", ""),
    (
        "python3 -c 'import sys; print([(s.name, s.mode, s.encoding, s.errors, s.line_buffering) for s in (sys.stdin, sys.stdout, sys.stderr)])'",
        "",
    ),
    (
        "python3 -c 'import sys; print(sys.stdin is sys.__stdin__, sys.stdout is sys.__stdout__)'",
        "",
    ),
    ("python3 -c 'import sys; print(sorted(sys.modules))'", ""),
    ("python3 -c 'import sys; print(sys.path)'", ""),
    ("python3 -c 'print(input(), input())'", "first\nsecond\n"),
    (
        "python3 -c 'import sys; print(sys.stdin.read().upper())'",
        "some text\n",
    ),
    ("python3 -", "print('from stdin', __name__)\n"),
    ("cd /w && python3 main.py x y", ""),
    ("cd /w && python3 pkg", ""),
    ("cd /w && python3 -m mod1 || python3 -c 'print(1)'", ""),
    ("python3 -c 'import sys; sys.exit(3)'", ""),
    ("python3 -c 'raise ValueError(\"boom\")'", ""),
    ("python3 missing.py", ""),
    (
        "python3 -S -c 'import sys; print(\"site\" in sys.modules)'",
        "",
    ),
    (
        "python3 -I -c 'import sys; print(sys.flags.isolated, sys.path[:1])'",
        "",
    ),
    (
        "python3 -u -c 'import sys; print(sys.stdout.write_through)'",
        "",
    ),
    (
        "python3 -c 'import site; print(site.getsitepackages(), site.ENABLE_USER_SITE)'",
        "",
    ),
    (
        "python3 -c 'print(1)' | python3 -c 'import sys; print(int(sys.stdin.read()) * 2)'",
        "",
    ),
];

#[test]
fn python_from_its_image_behaves_as_a_fresh_python() -> Result<()> {
    let mut image = Shell::python(true)?;
    let mut fresh = Shell::python(false)?;
    for shell in [&mut image, &mut fresh] {
        let (status, _, err) = shell.run(SETUP, b"")?;
        ensure!(status == 0, "setup: {err}");
    }
    for (line, stdin) in LINES {
        let from_image = image.run(line, stdin.as_bytes())?;
        let started_fresh = fresh.run(line, stdin.as_bytes())?;
        ensure!(
            from_image == started_fresh,
            "`{line}`:\n  from the image {from_image:?}\n  fresh          {started_fresh:?}"
        );
    }

    // The runs compared did start from the image (a run that cannot take it builds its own interpreter,
    // which the comparison alone would not tell).
    let probe = "python3 -c 'import sys; print(getattr(sys, \"_stasis_image\", False))'";
    ensure!(
        image.run(probe, b"")?.1 == "True\n",
        "python3 did not start from its image"
    );
    ensure!(fresh.run(probe, b"")?.1 == "False\n");
    ensure!(image.run(&probe.replace("python3", "python"), b"")?.1 == "True\n");

    // A module in a site directory made after the image was, and a `.pth` file there, are found.
    let (_, sites, _) = fresh.run(
        "python3 -c 'import site; print(site.getsitepackages()[0])'",
        b"",
    )?;
    let site = sites.trim();
    ensure!(site.starts_with('/'), "site directory {site:?}");
    let line = format!(
        "mkdir -p {site} /w/extra && echo 'W = 6' > {site}/sp_mod.py && echo /w/extra > {site}/x.pth && \
         echo 'E = 7' > /w/extra/ex_mod.py && \
         python3 -c 'import sp_mod, ex_mod, sys; print(sp_mod.W, ex_mod.E, sys.path[-2:])'"
    );
    let from_image = image.run(&line, b"")?;
    ensure!(
        from_image == fresh.run(&line, b"")?,
        "site packages: {from_image:?}"
    );
    ensure!(
        from_image.1.starts_with("6 7 "),
        "site packages: {from_image:?}"
    );

    // What must differ between runs still does: random numbers are not the image's.
    let draw = "python3 -c 'import random, os; print(random.random(), os.urandom(8).hex())'";
    let (first, second) = (image.run(draw, b"")?, image.run(draw, b"")?);
    ensure!(
        first.0 == 0 && first.1 != second.1,
        "random: {first:?} {second:?}"
    );
    Ok(())
}
