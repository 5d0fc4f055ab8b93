//! Fuzzes the unwind stage differentially: arbitrary bytes make a wasm-smith module importing the oracle's
//! host (`stasis::instrument::oracle`), which is run uninstrumented, instrumented and never paused, and
//! instrumented and paused by random plans drawn from the same bytes. Any difference in results, traps,
//! host calls or exported state panics with the oracle's explanation; inputs the generator, the
//! instrumenter or wasmtime refuse, or whose original runs out of fuel or stack, are skipped.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use stasis::instrument::oracle::{Limits, Oracle, OracleError, check_bytes};

/// Made once: building engines per input would dominate the run.
static ORACLE: OnceLock<Oracle> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let oracle = ORACLE.get_or_init(|| {
        Oracle::new(Limits {
            // Every input is compiled twice; unoptimised code compiles several times faster, and what is
            // checked is the instrumenter's wasm-to-wasm rewrite, not Cranelift's optimisations.
            optimize: false,
            ..Limits::default()
        })
        .expect("the oracle's engines")
    });
    match check_bytes(oracle, data) {
        Ok(_) | Err(OracleError::Skipped(_)) => {}
        Err(e) => panic!("the instrumented module diverged from the original: {e}\n{e:?}"),
    }
});
