//! The `unwind` fuzz target in small, for CI: random bytes made into wasm-smith modules importing the
//! oracle's host, each run uninstrumented, instrumented and never paused, and instrumented and paused by
//! random plans (`stasis::instrument::oracle::check_bytes`); any difference fails. The fuzz target
//! (`fuzz/fuzz_targets/unwind.rs`) runs the same check for millions of inputs.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use anyhow::{Result, anyhow, ensure};
use proptest::collection::vec;
use proptest::prelude::any;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use stasis::instrument::oracle::{Limits, Oracle, OracleError, check_bytes};

/// Cases per run; `PROPTEST_CASES` raises it for longer runs.
const CASES: u32 = 96;

#[test]
fn generated_modules_resume_like_the_original() -> Result<()> {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CASES);
    // Each input is compiled twice; unoptimised code compiles faster and runs these small modules fast
    // enough.
    let oracle = Oracle::new(Limits {
        optimize: false,
        ..Limits::default()
    })?;
    let mut runner = TestRunner::new(Config {
        cases,
        // A failure is shown as it is: shrinking would recompile hundreds of modules.
        max_shrink_iters: 0,
        failure_persistence: None,
        ..Config::default()
    });
    let checked = Cell::new(0u32);
    let pauses = Cell::new(0usize);
    let skips = RefCell::new(BTreeMap::<String, u32>::new());
    runner
        .run(&vec(any::<u8>(), 64..2048), |bytes| {
            match check_bytes(&oracle, &bytes) {
                Ok(report) => {
                    checked.set(checked.get() + 1);
                    pauses.set(pauses.get() + report.pauses);
                }
                Err(OracleError::Skipped(skip)) => {
                    // By variant (and the instrumenter's, for refusals): messages carry offsets unique
                    // to each input.
                    let reason = format!("{skip:?}");
                    let variant = reason
                        .split([' ', '{', ',', ')'])
                        .next()
                        .unwrap_or_default();
                    *skips.borrow_mut().entry(variant.to_owned()).or_default() += 1;
                }
                Err(e) => return Err(TestCaseError::fail(format!("{e}\n{e:?}"))),
            }
            Ok(())
        })
        .map_err(|e| anyhow!("{e}"))?;
    eprintln!(
        "unwind_fuzz: {} of {cases} inputs checked, {} pauses; skipped: {:?}",
        checked.get(),
        pauses.get(),
        skips.borrow()
    );
    // Without these the test could pass by skipping everything or never pausing.
    ensure!(
        checked.get() >= cases / 4,
        "only {} of {cases} inputs were checked; the rest were skipped",
        checked.get()
    );
    ensure!(pauses.get() > 0, "no input paused");
    Ok(())
}
