//! Never returns, in one of two ways chosen by the first argument: `busy` loops on the CPU, `sleep` asks the
//! host to sleep for a year (`poll_oneoff` on a clock). Both must be stopped at the sandbox's time limit
//! per call.

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("busy") => {
            let mut n = 0u64;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        Some("sleep") => {
            std::thread::sleep(std::time::Duration::from_secs(365 * 24 * 3600));
            println!("woke up");
        }
        other => panic!("unknown mode {other:?}"),
    }
}
