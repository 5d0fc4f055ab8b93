//! Fingerprints the instrumentation pass's source (`src/instrument/`), so that the runtime's cache of
//! instrumentation results (keyed by it) is never reused by a different pass: a changed pass may produce a
//! different module from the same input.

use std::path::Path;

fn main() {
    let dir = Path::new("src/instrument");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("src/instrument is readable")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    // FNV-1a, 64 bits: stable across Rust versions, enough to tell sources apart.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = std::fs::read(file).expect("an instrument source file is readable");
        for byte in name.as_bytes().iter().chain(&[0u8]).chain(&bytes) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    println!("cargo:rustc-env=STASIS_INSTRUMENT_FINGERPRINT={hash:016x}");
}
