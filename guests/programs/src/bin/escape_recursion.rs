//! Recurses without end, in one of two ways chosen by the first argument: `wasm` keeps each frame in wasm
//! locals, exhausting the engine's native call stack; `shadow` puts a large array in each frame, exhausting
//! the linear-memory stack Rust keeps below its data. Either must end in a trap for this guest only.

use std::hint::black_box;

#[inline(never)]
fn wasm_frames(n: u64) -> u64 {
    // black_box on the result keeps the call out of tail position, so it cannot become a loop.
    black_box(wasm_frames(black_box(n.wrapping_add(1)))).wrapping_add(n)
}

#[inline(never)]
fn shadow_frames(n: u64) -> u64 {
    let mut frame = [0u8; 4096];
    frame[(n % 4096) as usize] = n as u8;
    let inner = shadow_frames(black_box(n.wrapping_add(1)));
    black_box(&mut frame)[0] as u64 + inner
}

fn main() {
    let depth = match std::env::args().nth(1).as_deref() {
        Some("wasm") => wasm_frames(0),
        Some("shadow") => shadow_frames(0),
        other => panic!("unknown mode {other:?}"),
    };
    println!("returned from infinite recursion at {depth}");
}
