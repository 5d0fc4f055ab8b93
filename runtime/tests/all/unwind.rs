//! The unwind stage on its own (`stasis::instrument::unwind`), driven by the differential oracle of
//! `stasis::instrument::oracle`: a module is run to the end uninstrumented, instrumented and never paused,
//! and instrumented and paused at its N-th unwind point for every N — the stack unwound, the instance
//! captured, a *fresh* instance made from the capture and rewound — and every run must print, return and
//! leave in memory exactly the same.
//!
//! The programs (`tests/wat/*.wat`) import `stasis::point`, an unwind-point import answering `3x + 1`, and
//! `env::log`, which is not one.

use anyhow::{Result, ensure};
use stasis::instrument::{
    InstrumentOptions, Pausability,
    oracle::{Call, Ending, Limits, Oracle, Plan, Subject},
};
use wasmtime::Trap;

const LOOPS: &str = include_str!("../wat/loops.wat");
const MULTIVALUE: &str = include_str!("../wat/multivalue.wat");
const BR_TABLE: &str = include_str!("../wat/br_table.wat");
const RECURSION: &str = include_str!("../wat/recursion.wat");
const REFERENCE_RESULT: &str = include_str!("../wat/reference_result.wat");

/// An oracle instrumenting with `options` (the countdown is always on).
fn oracle(options: InstrumentOptions) -> Result<Oracle> {
    Ok(Oracle::new(Limits {
        options,
        ..Limits::default()
    })?)
}

/// `run(arg)` of the module prepared: instrumented, and its original and never-paused sessions compared.
fn prepare<'o>(oracle: &'o Oracle, wat: &str, arg: i32) -> Result<Subject<'o>> {
    let subject = oracle.prepare(&wat::parse_str(wat)?, &[Call::new("run", [i64::from(arg)])])?;
    wasmparser::Validator::new()
        .validate_all(&subject.layout().wasm)
        .map_err(|e| anyhow::anyhow!("the instrumented module must validate: {e}"))?;
    ensure!(
        *subject.pausability() == Pausability::MidCall,
        "expected the module to be pausable, got: {}",
        subject.pausability()
    );
    Ok(subject)
}

/// The differential check: never paused (in `prepare`), then paused at each import call in turn, then at
/// each unwind point in turn (countdown), then several times in one run.
fn differential(wat: &str, arg: i32) -> Result<()> {
    let oracle = oracle(InstrumentOptions::default())?;
    let subject = prepare(&oracle, wat, arg)?;
    let never = subject.check(&Plan::never())?;
    assert_eq!(never.pauses, 0);
    let calls = subject.import_calls();
    ensure!(calls > 0, "the program never reaches an unwind point");
    for n in 1..=calls {
        let got = subject.check(&Plan::at_call(n))?;
        assert_eq!(got.pauses, 1, "pause at call {n}");
    }
    // Every unwind point, loop headers included: a countdown of n pauses at the n-th.
    let mut n = 1;
    loop {
        let got = subject.check(&Plan::at_point(n))?;
        if got.pauses == 0 {
            break;
        }
        n += 1;
        ensure!(n < 5_000, "too many unwind points for this test");
    }
    ensure!(n > calls as i32, "loop headers count as unwind points too");
    assert_eq!(
        subject.unwind_points(),
        n as u64 - 1,
        "the oracle's count of unwind points"
    );
    // Many pauses in one run: every third unwind point.
    let got = subject.check(&Plan {
        countdowns: vec![3; 10_000],
        ..Plan::default()
    })?;
    // n - 1 unwind points were passed in all; a pause every third of them pauses that often.
    assert_eq!(
        got.pauses,
        (n as usize - 1) / 3,
        "pauses every third unwind point"
    );
    Ok(())
}

#[test]
fn loops_resume_at_every_unwind_point() -> Result<()> {
    differential(LOOPS, 4)
}

#[test]
fn multivalue_blocks_and_loop_parameters_resume() -> Result<()> {
    differential(MULTIVALUE, 6)
}

#[test]
fn br_table_state_machine_resumes() -> Result<()> {
    differential(BR_TABLE, 12)
}

#[test]
fn recursion_and_indirect_calls_resume() -> Result<()> {
    differential(RECURSION, 40)?;
    // Deep: 3,000 frames (each with an unwind point every 97 levels) go through the frame buffer.
    differential(RECURSION, 3_000)
}

#[test]
fn a_stack_deeper_than_the_frame_buffer_traps_while_unwinding() -> Result<()> {
    let oracle = oracle(InstrumentOptions {
        frame_buffer_max_pages: 1,
        ..InstrumentOptions::default()
    })?;
    // 64 KiB hold about 2,000 frames of `down`: 1,000 levels unwind, 5,000 do not.
    let shallow = prepare(&oracle, RECURSION, 1_000)?.check(&Plan::at_call(1))?;
    assert_eq!(shallow.pauses, 1);
    let deep = prepare(&oracle, RECURSION, 5_000)?.run(&Plan::at_call(1))?;
    let run = deep.calls.last().map(|c| c.ending.clone());
    assert_eq!(
        run,
        Some(Ending::Trapped(Trap::UnreachableCodeReached)),
        "the frames do not fit: {deep:?}"
    );
    assert_eq!(deep.pauses, 0, "a trapped unwind is no pause");
    Ok(())
}

#[test]
fn a_function_returning_a_reference_unwinds_with_a_null_dummy() -> Result<()> {
    let oracle = oracle(InstrumentOptions::default())?;
    let wasm = wat::parse_str(REFERENCE_RESULT)?;
    let subject = oracle.prepare(&wasm, &[Call::new("pair", [4])])?;
    ensure!(
        *subject.pausability() == Pausability::MidCall,
        "expected the module to be pausable, got: {}",
        subject.pausability()
    );
    ensure!(subject.unwind_points() > 4, "the loop and the calls unwind");
    for n in 1..=subject.unwind_points() as i32 {
        let got = subject.check(&Plan::at_point(n))?;
        assert_eq!(got.pauses, 1, "pause at unwind point {n}");
    }
    Ok(())
}
