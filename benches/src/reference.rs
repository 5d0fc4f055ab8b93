//! The machine's own limits, measured in the same run as the Stasis figures they are compared with:
//! writing N bytes to a file with fsync, copying N bytes in memory, and instantiating an empty module.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::Result;

/// Milliseconds to write `bytes` of incompressible data to a new file in `dir` and fsync it.
pub fn fsync_write_ms(dir: &Path, bytes: usize) -> Result<f64> {
    let data = pseudo_random(bytes);
    let path = dir.join("reference-write.bin");
    let started = Instant::now();
    let mut file = std::fs::File::create(&path)?;
    file.write_all(&data)?;
    file.sync_all()?;
    let elapsed = started.elapsed();
    std::fs::remove_file(&path)?;
    Ok(crate::stats::ms(elapsed))
}

/// Milliseconds to copy `bytes` from one resident buffer to another.
pub fn memcpy_ms(bytes: usize) -> f64 {
    let source = pseudo_random(bytes);
    let mut target = vec![1u8; bytes]; // touched, so the copy measures bandwidth, not page faults
    let started = Instant::now();
    target.copy_from_slice(&source);
    let elapsed = started.elapsed();
    std::hint::black_box(&target);
    crate::stats::ms(elapsed)
}

/// Milliseconds to instantiate an empty, already compiled module in a new store.
pub fn empty_instantiation_ms(engine: &wasmtime::Engine, module: &wasmtime::Module) -> Result<f64> {
    let started = Instant::now();
    let mut store = wasmtime::Store::new(engine, ());
    let instance = wasmtime::Instance::new(&mut store, module, &[])?;
    std::hint::black_box(instance);
    Ok(crate::stats::ms(started.elapsed()))
}

/// `len` bytes of xorshift output: incompressible, cheap to make.
pub fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = vec![0u8; len];
    for chunk in out.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    out
}
