//! Grows linear memory past the sandbox's limit: directly with `memory.grow` (by 4 GiB, then by the number of
//! 64 KiB pages given as the first argument), which must fail and be reported by the guest; a small growth
//! that fits; then an allocation of the number of bytes given as the second argument, which must end the
//! guest with a trap (Rust aborts when an allocation fails).

use core::arch::wasm32::memory_grow;

fn report(what: &str, previous: usize) {
    if previous == usize::MAX {
        println!("{what}: refused");
    } else {
        println!("{what}: grown from {previous} pages");
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let [past_limit, alloc] = args[..] else {
        panic!("usage: escape_memory PAGES BYTES");
    };
    report("grow by 4 GiB", memory_grow(0, 65536));
    report("grow past the limit", memory_grow(0, past_limit));
    report("grow by one page", memory_grow(0, 1));
    println!("allocating {alloc} bytes");
    let block = std::hint::black_box(vec![1u8; alloc]);
    println!("allocated {} bytes", block.len());
}
