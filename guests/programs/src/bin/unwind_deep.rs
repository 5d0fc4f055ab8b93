//! A command whose stack is deep when it is paused: recursion 3,000 frames down, with sleeps (unwind points
//! in the host) at every 500th level and at the bottom, and a small loop (loop-header unwind points) in
//! every frame; it prints a checksum that depends on every frame's state, so a frame restored wrongly shows.
//! The runtime's differential tests pause it at many points and compare with a run never paused.

use std::time::Duration;

fn down(depth: u32, acc: u64) -> u64 {
    let mut a = acc
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(u64::from(depth));
    for i in 0..3u64 {
        a ^= (a >> 7).wrapping_add(i);
    }
    if depth == 0 {
        std::thread::sleep(Duration::from_millis(1));
        return a;
    }
    if depth % 500 == 0 {
        std::thread::sleep(Duration::from_micros(200));
        println!("depth {depth}");
    }
    // Not a tail call: the result is combined with this frame's state on the way back up.
    down(depth - 1, a).rotate_left(depth % 63) ^ a
}

fn main() {
    let depth = std::env::args()
        .nth(1)
        .and_then(|d| d.parse().ok())
        .unwrap_or(3_000);
    println!("result {:016x}", down(depth, 1));
}
