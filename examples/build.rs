//! Compiles the example guest (`examples/guest`, a cargo workspace of its own) for `wasm32-wasip1` and
//! passes the path of its `.wasm` to the examples and tests as the `STASIS_EXAMPLE_GUEST` environment
//! variable at compile time (`stasis_examples::NOTEBOOK_GUEST`).
//!
//! Same pattern as `guests/artifacts/build.rs`: a nested `cargo build` with a target directory of its own,
//! `<host target dir>/wasm-example-guest`, shared by every profile and cargo command (build, test,
//! clippy), so the guest is compiled once and the nested build never waits for the host build's lock.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip1";
/// The guest's library name, hence its file name (`notebook.wasm`).
const GUEST: &str = "notebook";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let guest_dir = manifest_dir.join("guest");
    let repo_root = manifest_dir
        .parent()
        .expect("examples/ lives in the repository")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));

    // The guest's manifest, lockfile and sources, and the guest SDK it links: a change to any of them must
    // rebuild the guest (not its own `target/`, should anyone build it in place).
    for part in ["Cargo.toml", "Cargo.lock", "src"] {
        println!("cargo:rerun-if-changed={}", guest_dir.join(part).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        repo_root.join("guest-sdk").display()
    );

    ensure_target_installed();

    let target_dir = host_target_dir(&out_dir).join("wasm-example-guest");
    cargo_build(&guest_dir, &target_dir);

    let wasm = target_dir
        .join(TARGET)
        .join("release")
        .join(format!("{GUEST}.wasm"));
    assert!(
        wasm.is_file(),
        "the example guest was not produced at {}",
        wasm.display()
    );
    // The guest build lives outside OUT_DIR: should its output disappear, run this script again.
    println!("cargo:rerun-if-changed={}", wasm.display());
    println!("cargo:rustc-env=STASIS_EXAMPLE_GUEST={}", wasm.display());
}

/// The host build's target directory, `<target>` in `OUT_DIR` = `<target>/[<triple>/]<profile>/build/<pkg>-<hash>/out`
/// (with a `--target` host build, the triple's directory, which is as shared).
fn host_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .nth(4)
        .unwrap_or_else(|| {
            panic!(
                "OUT_DIR {} is not inside a target directory",
                out_dir.display()
            )
        })
        .to_path_buf()
}

/// Runs `cargo build --release --target wasm32-wasip1` in the guest's directory, into `target_dir`.
fn cargo_build(guest_dir: &Path, target_dir: &Path) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(guest_dir)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(target_dir);
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
        .unwrap_or_else(|e| panic!("could not run cargo to build the example guest: {e}"));
    assert!(
        status.success(),
        "building the example guest for {TARGET} failed (see the errors above)"
    );
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
