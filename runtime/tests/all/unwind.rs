//! The unwind stage on its own (`stasis::instrument::unwind`), driven by a minimal host written here: a
//! module is run to the end uninstrumented, instrumented and never paused, and instrumented and paused at
//! its N-th unwind point for every N — the stack unwound, the instance captured, a *fresh* instance made
//! from the capture and rewound — and every run must print, return and leave in memory exactly the same.
//!
//! The programs (`tests/wat/*.wat`) import `stasis::point`, an unwind-point import answering `3x + 1`, and
//! `env::log`, which is not one.

use anyhow::{Context as _, Result, bail, ensure};
use sha2::{Digest, Sha256};
use stasis::instrument::{
    InstrumentOptions, Instrumented, Pausability, instrument_with,
    unwind::{NORMAL, REWINDING, UNWINDING},
};
use wasmtime::{Caller, Engine, Global, Instance, Linker, Module, Store, Val};

const LOOPS: &str = include_str!("../wat/loops.wat");
const MULTIVALUE: &str = include_str!("../wat/multivalue.wat");
const BR_TABLE: &str = include_str!("../wat/br_table.wat");
const RECURSION: &str = include_str!("../wat/recursion.wat");

/// What the host of a run sees and decides.
#[derive(Default)]
struct Host {
    /// The instance's state global (instrumented modules only).
    state: Option<Global>,
    countdown: Option<Global>,
    /// Unwind at these import calls (counted over the whole run, 1-based).
    pause_at_calls: Vec<u64>,
    calls: u64,
    /// The argument of the call that unwound, to check that the rewind makes the same call again.
    pending: Option<i32>,
    log: Vec<i32>,
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    results: Vec<i64>,
    log: Vec<i32>,
    memory: [u8; 32],
    pauses: usize,
}

fn linker(engine: &Engine) -> Result<Linker<Host>> {
    let mut linker = Linker::new(engine);
    linker.func_wrap(
        "stasis",
        "point",
        |mut caller: Caller<'_, Host>, x: i32| -> wasmtime::Result<i32> {
            if let Some(state) = caller.data().state {
                if state.get(&mut caller).i32() == Some(REWINDING) {
                    state.set(&mut caller, Val::I32(NORMAL))?;
                    let pending = caller.data_mut().pending.take();
                    if pending != Some(x) {
                        wasmtime::bail!("rewound into point({x}), but point({pending:?}) unwound");
                    }
                } else {
                    caller.data_mut().calls += 1;
                    let calls = caller.data().calls;
                    let mut unwind = caller.data().pause_at_calls.contains(&calls);
                    if let Some(countdown) = caller.data().countdown {
                        let left = countdown.get(&mut caller).i32().unwrap_or(0);
                        if left > 0 {
                            countdown.set(&mut caller, Val::I32(left - 1))?;
                            unwind |= left == 1;
                        }
                    }
                    if unwind {
                        state.set(&mut caller, Val::I32(UNWINDING))?;
                        caller.data_mut().pending = Some(x);
                        return Ok(0);
                    }
                }
            }
            caller.data_mut().log.push(x);
            Ok(x.wrapping_mul(3).wrapping_add(1))
        },
    )?;
    linker.func_wrap("env", "log", |mut caller: Caller<'_, Host>, x: i32| {
        caller.data_mut().log.push(-x - 1);
    })?;
    Ok(linker)
}

/// Every exported memory's bytes and every exported global's value, by export name.
struct Capture {
    memories: Vec<(String, Vec<u8>)>,
    globals: Vec<(String, Val)>,
}

fn capture(store: &mut Store<Host>, instance: &Instance, layout: &Instrumented) -> Result<Capture> {
    let mut memories = Vec::new();
    for m in &layout.memories {
        let memory = instance
            .get_memory(&mut *store, &m.export_name)
            .context("memory exported")?;
        memories.push((m.export_name.clone(), memory.data(&*store).to_vec()));
    }
    let mut globals = Vec::new();
    for g in &layout.globals {
        let global = instance
            .get_global(&mut *store, &g.export_name)
            .context("global exported")?;
        globals.push((g.export_name.clone(), global.get(&mut *store)));
    }
    Ok(Capture { memories, globals })
}

fn restore(store: &mut Store<Host>, instance: &Instance, capture: &Capture) -> Result<()> {
    for (name, bytes) in &capture.memories {
        let memory = instance.get_memory(&mut *store, name).context("memory")?;
        let pages = (bytes.len() as u64).div_ceil(65536);
        let current = memory.size(&*store);
        memory.grow(&mut *store, pages.saturating_sub(current))?;
        memory.data_mut(&mut *store)[..bytes.len()].copy_from_slice(bytes);
    }
    for (name, value) in &capture.globals {
        instance
            .get_global(&mut *store, name)
            .context("global")?
            .set(&mut *store, *value)?;
    }
    Ok(())
}

fn digest(store: &mut Store<Host>, instance: &Instance) -> Result<[u8; 32]> {
    let memory = instance
        .get_memory(&mut *store, "memory")
        .context("the guest's memory")?;
    Ok(Sha256::digest(memory.data(&*store)).into())
}

fn results(vals: &[Val]) -> Vec<i64> {
    vals.iter()
        .map(|v| match v {
            Val::I32(x) => i64::from(*x),
            Val::I64(x) => *x,
            other => panic!("unexpected result {other:?}"),
        })
        .collect()
}

/// Runs `run(arg)` of the original module, with a host that never unwinds.
fn run_original(wat: &str, arg: i32) -> Result<Outcome> {
    let engine = Engine::default();
    let module = Module::new(&engine, wat::parse_str(wat)?)?;
    let mut store = Store::new(&engine, Host::default());
    let instance = linker(&engine)?.instantiate(&mut store, &module)?;
    let run = instance.get_func(&mut store, "run").context("run")?;
    let mut out = vec![Val::I32(0); run.ty(&store).results().len()];
    run.call(&mut store, &[Val::I32(arg)], &mut out)?;
    Ok(Outcome {
        results: results(&out),
        memory: digest(&mut store, &instance)?,
        log: std::mem::take(&mut store.data_mut().log),
        pauses: 0,
    })
}

/// How an instrumented run is paused.
#[derive(Clone, Default)]
struct Pauses {
    /// At these import calls.
    at_calls: Vec<u64>,
    /// Countdowns (unwind points passed, loop headers included) to load before each resume, the first
    /// before the start.
    countdowns: Vec<i32>,
}

/// Runs `run(arg)` of the instrumented module, pausing as `pauses` says; each pause captures the instance
/// and continues on a fresh instance made from the capture.
fn run_instrumented(
    engine: &Engine,
    module: &Module,
    layout: &Instrumented,
    arg: i32,
    pauses: &Pauses,
) -> Result<Outcome> {
    let unwind = layout.unwind.as_ref().context("the unwind stage ran")?;
    let linker = linker(engine)?;
    let mut host = Host {
        pause_at_calls: pauses.at_calls.clone(),
        ..Host::default()
    };
    let mut countdowns = pauses.countdowns.iter().copied();
    let mut carried: Option<Capture> = None;
    let mut paused = 0;
    loop {
        let mut store = Store::new(engine, host);
        let instance = linker.instantiate(&mut store, module)?;
        let global = |store: &mut Store<Host>, index: u32| -> Result<Global> {
            instance
                .get_global(&mut *store, &stasis::instrument::global_export_name(index))
                .context("an unwind global")
        };
        let state = global(&mut store, unwind.state_global)?;
        store.data_mut().state = Some(state);
        store.data_mut().countdown = match unwind.countdown_global {
            Some(g) => Some(global(&mut store, g)?),
            None => None,
        };
        if let Some(capture) = &carried {
            restore(&mut store, &instance, capture)?;
            state.set(&mut store, Val::I32(REWINDING))?;
        }
        if let (Some(countdown), Some(n)) = (store.data().countdown, countdowns.next()) {
            countdown.set(&mut store, Val::I32(n))?;
        }
        let run = instance.get_func(&mut store, "run").context("run")?;
        let mut out = vec![Val::I32(0); run.ty(&store).results().len()];
        run.call(&mut store, &[Val::I32(arg)], &mut out)?;
        match state.get(&mut store).i32() {
            Some(UNWINDING) => {
                paused += 1;
                ensure!(paused < 10_000, "the run never ends");
                carried = Some(capture(&mut store, &instance, layout)?);
                host = std::mem::take(store.data_mut());
            }
            Some(NORMAL) | Some(3) => {
                return Ok(Outcome {
                    results: results(&out),
                    memory: digest(&mut store, &instance)?,
                    log: std::mem::take(&mut store.data_mut().log),
                    pauses: paused,
                });
            }
            other => bail!("the run returned in state {other:?}"),
        }
    }
}

fn instrumented(wat: &str, options: &InstrumentOptions) -> Result<(Engine, Module, Instrumented)> {
    let layout = instrument_with(&wat::parse_str(wat)?, options)?;
    wasmparser::Validator::new()
        .validate_all(&layout.wasm)
        .context("the instrumented module must validate")?;
    ensure!(
        layout.pausable == Pausability::MidCall,
        "expected the module to be pausable, got: {}",
        layout.pausable
    );
    let engine = Engine::default();
    let module = Module::new(&engine, &layout.wasm)?;
    Ok((engine, module, layout))
}

/// The differential check: never paused, then paused at each import call in turn, then at each unwind
/// point in turn (countdown), then several times in one run.
fn differential(wat: &str, arg: i32) -> Result<()> {
    let expected = run_original(wat, arg)?;
    let options = InstrumentOptions {
        countdown: true,
        ..InstrumentOptions::default()
    };
    let (engine, module, layout) = instrumented(wat, &options)?;
    let never = run_instrumented(&engine, &module, &layout, arg, &Pauses::default())?;
    assert_eq!(never.pauses, 0);
    assert_eq!(
        (&never.results, &never.log, never.memory),
        (&expected.results, &expected.log, expected.memory),
        "instrumented, never paused"
    );
    let calls = expected.log.iter().filter(|x| **x >= 0).count() as u64;
    ensure!(calls > 0, "the program never reaches an unwind point");
    for n in 1..=calls {
        let got = run_instrumented(
            &engine,
            &module,
            &layout,
            arg,
            &Pauses {
                at_calls: vec![n],
                ..Pauses::default()
            },
        )?;
        assert_eq!(got.pauses, 1, "pause at call {n}");
        assert_eq!(
            (&got.results, &got.log, got.memory),
            (&expected.results, &expected.log, expected.memory),
            "paused at import call {n}"
        );
    }
    // Every unwind point, loop headers included: a countdown of n pauses at the n-th.
    let mut n = 1;
    loop {
        let got = run_instrumented(
            &engine,
            &module,
            &layout,
            arg,
            &Pauses {
                countdowns: vec![n],
                ..Pauses::default()
            },
        )?;
        assert_eq!(
            (&got.results, &got.log, got.memory),
            (&expected.results, &expected.log, expected.memory),
            "paused at unwind point {n}"
        );
        if got.pauses == 0 {
            break;
        }
        n += 1;
        ensure!(n < 5_000, "too many unwind points for this test");
    }
    ensure!(n > calls as i32, "loop headers count as unwind points too");
    // Many pauses in one run: every third unwind point.
    let got = run_instrumented(
        &engine,
        &module,
        &layout,
        arg,
        &Pauses {
            countdowns: vec![3; 10_000],
            ..Pauses::default()
        },
    )?;
    // n - 1 unwind points were passed in all; a pause every third of them pauses that often.
    assert_eq!(
        got.pauses,
        (n as usize - 1) / 3,
        "pauses every third unwind point"
    );
    assert_eq!(
        (&got.results, &got.log, got.memory),
        (&expected.results, &expected.log, expected.memory),
        "paused every third unwind point ({} pauses)",
        got.pauses
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
    let options = InstrumentOptions {
        frame_buffer_max_pages: 1,
        ..InstrumentOptions::default()
    };
    let (engine, module, layout) = instrumented(RECURSION, &options)?;
    // 64 KiB hold about 2,000 frames of `down`: 1,000 levels unwind, 5,000 do not.
    let shallow = run_instrumented(
        &engine,
        &module,
        &layout,
        1_000,
        &Pauses {
            at_calls: vec![1],
            ..Pauses::default()
        },
    )?;
    assert_eq!(shallow.pauses, 1);
    let deep = run_instrumented(
        &engine,
        &module,
        &layout,
        5_000,
        &Pauses {
            at_calls: vec![1],
            ..Pauses::default()
        },
    );
    let error = deep.expect_err("the frames do not fit");
    let trap = error.downcast_ref::<wasmtime::Trap>().copied();
    assert_eq!(
        trap,
        Some(wasmtime::Trap::UnreachableCodeReached),
        "{error:?}"
    );
    Ok(())
}
