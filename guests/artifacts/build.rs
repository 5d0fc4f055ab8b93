//! Compiles the guest workspace (`guests/`), the Python guest (`guests/python`) and the example guests
//! (`examples/guest`, `examples/service`), each a workspace of its own, for
//! `wasm32-wasip1` and generates, for every guest program, a constant holding the path of its `.wasm` file
//! plus a `foreach_program!` macro listing them all.
//!
//! The pattern is wasmtime's `crates/test-programs`: guests are ordinary Rust crates built by a nested
//! `cargo build` with its own target directory, so they never fight the host build for its lock. That
//! directory is `<host target dir>/wasm-guests`, one for every profile, every cargo command (build, test,
//! clippy) and every host triple (`--target`), not one per `OUT_DIR`: the Python guest takes minutes to
//! compile and must be compiled once, and every host build must load the same guest bytes.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip1";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let guests_dir = manifest_dir
        .parent()
        .expect("artifacts lives inside guests/")
        .to_path_buf();
    let repo_root = guests_dir
        .parent()
        .expect("guests/ lives in the repository")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));

    // Every guest crate (but this one and build output) and the guest SDK: a change to any of them must
    // rebuild the guests.
    println!(
        "cargo:rerun-if-changed={}",
        guests_dir.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        guests_dir.join("Cargo.lock").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        repo_root.join("guest-sdk").display()
    );
    for entry in std::fs::read_dir(&guests_dir).expect("guests dir is readable") {
        let path = entry.expect("directory entry").path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path.is_dir() && name != "artifacts" && name != "target" && name != "python" {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    // The Python guest: its manifest, lockfile, sources and vendored crates, not its own `target/` should anyone build there.
    let python_dir = guests_dir.join("python");
    for part in ["Cargo.toml", "Cargo.lock", "src", "vendor"] {
        println!("cargo:rerun-if-changed={}", python_dir.join(part).display());
    }
    // The example guest a user would write (`examples/guest`, a workspace of its own), built here too so
    // one build pipeline serves every guest.
    let notebook_dir = repo_root.join("examples").join("guest");
    for part in ["Cargo.toml", "Cargo.lock", "src"] {
        println!(
            "cargo:rerun-if-changed={}",
            notebook_dir.join(part).display()
        );
    }

    // The example service guest (`examples/service`, a workspace of its own): a program with sockets.
    let service_dir = repo_root.join("examples").join("service");
    for part in ["Cargo.toml", "Cargo.lock", "src"] {
        println!(
            "cargo:rerun-if-changed={}",
            service_dir.join(part).display()
        );
    }

    // The paths rewritten out of the guests (see `remap_host_paths`).
    println!("cargo:rerun-if-env-changed=CARGO_HOME");
    println!("cargo:rerun-if-env-changed=HOME");

    ensure_target_installed();

    let target_dir = host_target_dir(&out_dir).join("wasm-guests");
    let remap = remap_host_paths(&repo_root);
    cargo_build(
        &guests_dir,
        &["build", "--release", "--workspace", "--target", TARGET],
        &target_dir,
        &remap,
        "the guest programs",
    );
    // `--locked`: RustPython builds only with the versions of its shipped lockfile (see guests/python/Cargo.toml).
    cargo_build(
        &python_dir,
        &["build", "--release", "--locked", "--target", TARGET],
        &target_dir,
        &remap,
        "the Python guest",
    );
    cargo_build(
        &notebook_dir,
        &["build", "--release", "--target", TARGET],
        &target_dir,
        &remap,
        "the example guest",
    );
    cargo_build(
        &service_dir,
        &["build", "--release", "--target", TARGET],
        &target_dir,
        &remap,
        "the example service guest",
    );

    let wasm_dir = target_dir.join(TARGET).join("release");
    let mut names = guest_binaries(&guests_dir);
    names.push("python".to_owned());
    names.push("notebook".to_owned());
    names.push("service".to_owned());
    names.sort();
    let mut generated = String::new();
    for name in &names {
        let path = wasm_dir.join(format!("{name}.wasm"));
        assert!(
            path.is_file(),
            "guest program {name} was not produced at {}",
            path.display()
        );
        let ident = name.replace('-', "_");
        writeln!(
            generated,
            "/// Path of the compiled `{name}` guest program.\npub const {}: &str = {:?};",
            ident.to_uppercase(),
            path.display().to_string()
        )
        .expect("writing to a String cannot fail");
    }
    generated.push_str("/// Calls `$mac!(name)` once per guest program, so tests can require one host test per program.\n");
    generated.push_str("#[macro_export]\nmacro_rules! foreach_program {\n    ($mac:ident) => {\n");
    for name in &names {
        writeln!(generated, "        $mac!({});", name.replace('-', "_"))
            .expect("writing to a String cannot fail");
    }
    generated.push_str("    };\n}\n");
    generated.push_str(
        "/// Every guest program as `(name, path)`.\npub const ALL: &[(&str, &str)] = &[\n",
    );
    for name in &names {
        writeln!(
            generated,
            "    ({name:?}, {}),",
            name.replace('-', "_").to_uppercase()
        )
        .expect("writing to a String cannot fail");
    }
    generated.push_str("];\n");
    // The guest builds live outside OUT_DIR: should one of their outputs disappear, run this script again.
    for name in &names {
        println!(
            "cargo:rerun-if-changed={}",
            wasm_dir.join(format!("{name}.wasm")).display()
        );
    }
    // Rewriting an unchanged file would recompile this crate and relink everything that depends on it.
    let programs = out_dir.join("programs.rs");
    if std::fs::read_to_string(&programs).ok().as_deref() != Some(generated.as_str()) {
        std::fs::write(&programs, generated).expect("OUT_DIR is writable");
    }
}

/// The host build's target directory, `<target>` in `OUT_DIR` = `<target>/[<triple>/]<profile>/build/<pkg>-<hash>/out`.
/// A `--target` build (a cross build for another CPU, say) lives in `<target>/<triple>/`, and it gets the
/// same guest directory as the plain build: the guests are `wasm32-wasip1` whatever the host is, and a blob
/// names its template by the sha256 of the wasm, so every host build of one checkout must load the very
/// same bytes for blobs to move between them (and the Python guest is compiled once, not once per triple).
fn host_target_dir(out_dir: &Path) -> PathBuf {
    let dir = out_dir.ancestors().nth(4).unwrap_or_else(|| {
        panic!(
            "OUT_DIR {} is not inside a target directory",
            out_dir.display()
        )
    });
    let triple = env::var_os("TARGET");
    match dir.parent() {
        // Cargo marks the root of every target directory with CACHEDIR.TAG; the triple's directory has none.
        Some(root)
            if triple.is_some()
                && dir.file_name() == triple.as_deref()
                && root.join("CACHEDIR.TAG").is_file() =>
        {
            root.to_path_buf()
        }
        _ => dir.to_path_buf(),
    }
}

/// A `--config` setting for the guest builds that rewrites the host's absolute paths in what rustc
/// embeds (panic locations of registry crates: `/home/me/.cargo/registry/src/…/boa_engine-…/src/…`) to
/// fixed ones, `/cargo` and `/stasis`. Without it, a guest built on a machine whose cargo home or checkout
/// is elsewhere has other bytes, hence another sha256 — and a blob names its template by that sha256, so
/// it would not resume there: the blob would carry the build machine's paths in its identity.
fn remap_host_paths(repo_root: &Path) -> String {
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    let mut flags = Vec::new();
    for (from, to) in [
        (cargo_home, "/cargo"),
        (Some(repo_root.to_path_buf()), "/stasis"),
    ] {
        let Some(from) = from else { continue };
        // Both spellings, should the path reach rustc through a symbolic link.
        let mut spellings = vec![from.clone()];
        if let Ok(real) = from.canonicalize()
            && real != from
        {
            spellings.push(real);
        }
        for path in spellings {
            flags.push(format!("--remap-path-prefix={}={to}", path.display()));
        }
    }
    let quoted: Vec<String> = flags
        .iter()
        .map(|flag| format!("\"{}\"", flag.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("target.{TARGET}.rustflags=[{}]", quoted.join(", "))
}

/// Runs a nested `cargo` with `args` in `dir`, building into `target_dir` with the `--config` setting
/// `config`; `what` names it in a failure.
fn cargo_build(dir: &Path, args: &[&str], target_dir: &Path, config: &str, what: &str) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(dir)
        .args(args)
        .arg("--target-dir")
        .arg(target_dir)
        .arg("--config")
        .arg(config);
    // The outer cargo's settings (clippy wrappers, host RUSTFLAGS, jobserver of a different build) must not
    // leak into the guest build, nor change its fingerprints between `cargo build`, `test` and `clippy`.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "CARGO_LLVM_COV",
        "RUSTC_BOOTSTRAP",
        "CLIPPY_ARGS",
        "CLIPPY_CONF_DIR",
    ] {
        build.env_remove(var);
    }
    let status = build
        .status()
        .unwrap_or_else(|e| panic!("could not run cargo to build {what}: {e}"));
    assert!(
        status.success(),
        "building {what} for {TARGET} failed (see the errors above)"
    );
}

/// Names of all guest programs: every command under `programs/src/bin/*.rs` and every reactor crate
/// (a `cdylib`) under `reactors/`, named after its directory; a crate of its own elsewhere in `guests/`
/// with a `src/main.rs` counts too.
fn guest_binaries(guests_dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let bins = guests_dir.join("programs").join("src").join("bin");
    for entry in
        std::fs::read_dir(&bins).unwrap_or_else(|e| panic!("reading {}: {e}", bins.display()))
    {
        let path = entry.expect("directory entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            names.push(
                path.file_stem()
                    .expect("file has a stem")
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    for entry in std::fs::read_dir(guests_dir).expect("guests dir is readable") {
        let path = entry.expect("directory entry").path();
        if path.join("src").join("main.rs").is_file() && path.join("Cargo.toml").is_file() {
            names.push(
                path.file_name()
                    .expect("dir has a name")
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    let reactors = guests_dir.join("reactors");
    if let Ok(entries) = std::fs::read_dir(&reactors) {
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.join("Cargo.toml").is_file() {
                // A cdylib's file is named after its library, where cargo turns `-` into `_`.
                names.push(
                    path.file_name()
                        .expect("dir has a name")
                        .to_string_lossy()
                        .replace('-', "_"),
                );
            }
        }
    }
    names
}

/// Installs the `wasm32-wasip1` standard library with rustup when it is missing, or fails naming the command.
fn ensure_target_installed() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(sysroot) = &sysroot
        && sysroot.join("lib").join("rustlib").join(TARGET).is_dir()
    {
        return;
    }
    println!(
        "cargo:warning=the {TARGET} target is missing; installing it with `rustup target add {TARGET}`"
    );
    let installed = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status();
    match installed {
        Ok(status) if status.success() => {}
        _ => panic!(
            "the {TARGET} Rust target is not installed and could not be installed automatically; \
             run `rustup target add {TARGET}` and build again"
        ),
    }
}
