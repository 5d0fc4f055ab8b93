//! Paths of the guest programs Stasis ships and tests with, compiled for `wasm32-wasip1` by this crate's build
//! script from the `guests/` workspace. Each program is a constant named after it in upper case (the file
//! `guests/programs/src/bin/counter.rs` is [`COUNTER`]-style `COUNTER`), [`ALL`] lists them, and
//! `foreach_program!` lets a test suite require one test per program.

include!(concat!(env!("OUT_DIR"), "/programs.rs"));

/// Reads the compiled bytes of a guest program given its path constant.
///
/// # Panics
/// Panics when the file produced by the build script has disappeared, which only happens if the target
/// directory was tampered with after the build.
pub fn bytes(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("guest program {path} is missing: {e}"))
}
