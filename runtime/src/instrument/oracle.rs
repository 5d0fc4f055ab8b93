//! A differential oracle for the unwind stage: a module runs uninstrumented, instrumented and never paused,
//! and instrumented and paused wherever a [`Plan`] says, and every run must call the host, return, trap and
//! leave its exported state exactly alike.
//!
//! A *session* instantiates the module and calls the exports a list of [`Call`]s names, in order, on the same
//! instance. The host offers two imports: `stasis::point` (`i32 -> i32`, an unwind point, answering `3x + 1`)
//! and `env::log` (`i32 -> ()`, not one). A paused session follows the protocol of [`super::unwind`]: at an
//! unwind point the plan picks, the stack unwinds into the frame buffer, the host captures every memory and
//! global the instrumenter lists, builds a *fresh* instance from the capture (on a fresh store: nothing but
//! the capture carries over) and calls the same export again to rewind. Pauses are chosen by import call
//! (the N-th call of `stasis::point` in the session) or by the countdown global of
//! [`InstrumentOptions::countdown`] (the N-th unwind point, loop headers included), loaded before the session
//! starts and again after each pause.
//!
//! What is compared ([`Outcome`]): how each call ended (its results, or its trap), every host call in order,
//! and a digest of every memory and global the module exports under its own names. Traps are outcomes like
//! any other: an original that traps must trap the same way instrumented. Every run is bounded by wasmtime
//! fuel, and the instrumented one, which executes more instructions, gets a multiple of the original's for
//! each stretch between pauses; an original that runs out of fuel or of stack says nothing about the
//! instrumentation and makes the input a [`Skip`], as do modules the instrumenter or wasmtime refuses.
//! Nothing here panics on any input: failures are [`OracleError`]s, skips one of its variants.
//!
//! [`generate`] and [`check_bytes`] turn arbitrary bytes into a wasm-smith module with these imports, calls
//! of its exports and random pause plans; they are what the `unwind` fuzz target and the bounded property
//! test run.

use std::fmt;

use arbitrary::Unstructured;
use sha2::{Digest as _, Sha256};
use wasmtime::{
    Caller, Engine, ExternType, Func, FuncType, Global, Instance, Linker, Module, OptLevel, Store,
    Trap, V128, Val, ValType,
};

use super::unwind::{NORMAL, REQUESTED, REWINDING, UNWINDING};
use super::{
    InstrumentError, InstrumentOptions, Instrumented, Pausability, START_EXPORT,
    global_export_name, instrument_with,
};

/// Name under which [`Outcome::calls`] records the instantiation (data segments and the start function).
pub const INSTANTIATION: &str = "(instantiation)";

/// How the oracle's runs are bounded and how the module is instrumented.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Fuel of an original session, all its calls together. An original that runs out of it is a skip.
    pub fuel: u64,
    /// An instrumented session gets `fuel * fuel_factor` for each stretch between two pauses: it executes
    /// the original's instructions plus its checks, and rewinding re-enters every frame. Running out of it
    /// where the original did not is a failure (an instrumented loop that never ends, say).
    pub fuel_factor: u64,
    /// wasmtime's `max_wasm_stack` for the original, in bytes. An original that overflows it is a skip.
    pub max_wasm_stack: usize,
    /// The instrumented module's stack is this many times larger, since its frames hold slot locals too; an
    /// overflow there where the original had none is a failure.
    pub stack_factor: usize,
    /// Whether Cranelift optimises both modules; fuzzing compiles two modules per input, and unoptimised
    /// code compiles several times faster.
    pub optimize: bool,
    /// How the module is instrumented; [`InstrumentOptions::countdown`] is always turned on, since plans
    /// pause by countdown.
    pub options: InstrumentOptions,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: 50_000_000,
            fuel_factor: 16,
            max_wasm_stack: 512 << 10,
            stack_factor: 4,
            optimize: true,
            options: InstrumentOptions::default(),
        }
    }
}

/// A call the session makes: an export and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The export's name.
    pub export: String,
    /// Its arguments, one per parameter: integers as they are (wrapped for `i32`), floats converted from the
    /// integer, vectors zero, nullable references null. Missing arguments are zero; an export with a
    /// non-nullable reference parameter cannot be called and is left out of the session.
    pub args: Vec<i64>,
}

impl Call {
    /// A call of `export` with `args`.
    pub fn new(export: impl Into<String>, args: impl Into<Vec<i64>>) -> Self {
        Self {
            export: export.into(),
            args: args.into(),
        }
    }
}

/// Where an instrumented session pauses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Unwind at these calls of `stasis::point`, counted over the whole session from 1 (a call remade by a
    /// rewind is not counted again).
    pub at_calls: Vec<u64>,
    /// Countdowns loaded into the countdown global, the first before the session starts and the next after
    /// each pause: a countdown of N pauses at the N-th unwind point passed from then on. Zero loads nothing
    /// and pauses nowhere.
    pub countdowns: Vec<i32>,
}

impl Plan {
    /// Never pause.
    pub fn never() -> Self {
        Self::default()
    }

    /// Pause once, at the `n`-th call of `stasis::point`.
    pub fn at_call(n: u64) -> Self {
        Self {
            at_calls: vec![n],
            countdowns: Vec::new(),
        }
    }

    /// Pause once, at the `n`-th unwind point.
    pub fn at_point(n: i32) -> Self {
        Self {
            at_calls: Vec::new(),
            countdowns: vec![n],
        }
    }

    /// The most pauses the plan can cause: each entry fires at most once.
    fn max_pauses(&self) -> usize {
        self.at_calls.len() + self.countdowns.iter().filter(|&&n| n > 0).count()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.at_calls.is_empty() && self.countdowns.is_empty() {
            return f.write_str("never paused");
        }
        write!(f, "paused at import calls {:?}", self.at_calls)?;
        if self.countdowns.len() > 8 {
            write!(
                f,
                " and by countdowns {:?}… ({} in all)",
                &self.countdowns[..8],
                self.countdowns.len()
            )
        } else {
            write!(f, " and by countdowns {:?}", self.countdowns)
        }
    }
}

/// A value a call returned or a global held. Floats are kept as bits, so that NaNs compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Value {
    /// An `i32`.
    I32(i32),
    /// An `i64`.
    I64(i64),
    /// The bits of an `f32`.
    F32(u32),
    /// The bits of an `f64`.
    F64(u64),
    /// A `v128`.
    V128(u128),
    /// A reference, of which only nullness means the same in two instances.
    Ref {
        /// Whether it is null.
        null: bool,
    },
}

impl From<&Val> for Value {
    fn from(val: &Val) -> Self {
        match val {
            Val::I32(x) => Self::I32(*x),
            Val::I64(x) => Self::I64(*x),
            Val::F32(x) => Self::F32(*x),
            Val::F64(x) => Self::F64(*x),
            Val::V128(x) => Self::V128(x.as_u128()),
            other => Self::Ref {
                null: (*other).ref_().is_none_or(|r| r.is_null()),
            },
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// It returned these results.
    Returned(Vec<Value>),
    /// It trapped.
    Trapped(Trap),
}

/// One call of a session and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// The export called, or [`INSTANTIATION`].
    pub export: String,
    /// How it ended.
    pub ending: Ending,
}

/// A call the guest made to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostCall {
    /// `stasis::point(x)` (a call that unwound is recorded once, when the rewind makes it again).
    Point(i32),
    /// `env::log(x)`.
    Log(i32),
}

/// What a session did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The instantiation, then every call, in order. A trap while instantiating ends the session.
    pub calls: Vec<CallRecord>,
    /// Every host call, in order.
    pub host_calls: Vec<HostCall>,
    /// SHA-256 of every memory (size and bytes) and global (value) the module exports under its own names,
    /// at the end of the session; `None` when instantiation trapped.
    pub state: Option<[u8; 32]>,
    /// How many times the session paused.
    pub pauses: usize,
    /// How many calls of `stasis::point` it made (a call remade by a rewind counted once).
    pub import_calls: u64,
    /// The countdown global at the end, in instrumented sessions.
    pub countdown_left: Option<i32>,
}

impl Outcome {
    /// The first way in which `other` behaved differently, if any; pauses and the countdown are not
    /// behaviour.
    pub fn difference(&self, other: &Outcome) -> Option<String> {
        for (i, (a, b)) in self.calls.iter().zip(&other.calls).enumerate() {
            if a != b {
                return Some(format!(
                    "call {i} (`{}`) ended with {:?}, expected {:?}",
                    a.export, b.ending, a.ending
                ));
            }
        }
        if self.calls.len() != other.calls.len() {
            return Some(format!(
                "{} calls made, expected {}",
                other.calls.len(),
                self.calls.len()
            ));
        }
        if let Some(i) = (0..self.host_calls.len().min(other.host_calls.len()))
            .find(|&i| self.host_calls[i] != other.host_calls[i])
        {
            return Some(format!(
                "host call {i} was {:?}, expected {:?}",
                other.host_calls[i], self.host_calls[i]
            ));
        }
        if self.host_calls.len() != other.host_calls.len() {
            return Some(format!(
                "{} host calls made, expected {}",
                other.host_calls.len(),
                self.host_calls.len()
            ));
        }
        if self.state != other.state {
            return Some("the exported memories and globals differ at the end".into());
        }
        None
    }
}

/// Why an input says nothing about the instrumentation and is passed over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    /// The generator could not make a module of these bytes.
    #[error("the generator made no module: {0}")]
    Generator(String),
    /// The instrumenter refused the module.
    #[error("the instrumenter refused the module: {0}")]
    Refused(#[from] InstrumentError),
    /// wasmtime refused the original module.
    #[error("wasmtime refused the original module: {0}")]
    OriginalRejected(String),
    /// The original failed for a reason other than a trap (a resource limit while instantiating, say).
    #[error("the original failed without a trap: {0}")]
    OriginalFailed(String),
    /// The original ran out of fuel.
    #[error("the original ran out of fuel")]
    OriginalOutOfFuel,
    /// The original overflowed its stack.
    #[error("the original overflowed its stack")]
    OriginalStackOverflow,
    /// A call names no exported function.
    #[error("the module exports no function `{0}`")]
    NoSuchExport(String),
}

/// Why the oracle failed: an input was skipped, or the instrumented module behaved differently.
#[derive(Debug, thiserror::Error)]
pub enum OracleError {
    /// The input was passed over; not a failure of the instrumentation.
    #[error("skipped: {0}")]
    Skipped(#[from] Skip),
    /// The engines could not be set up.
    #[error("cannot set up the oracle's engines: {0}")]
    Engine(String),
    /// The instrumenter produced a module wasmtime refuses, though it accepted the original.
    #[error("wasmtime refused the instrumented module: {0}")]
    InstrumentedRejected(String),
    /// An instrumented session behaved differently from the original.
    #[error("{run}: {difference}")]
    Mismatch {
        /// Which session: "never paused", "paused at …".
        run: String,
        /// The first difference.
        difference: String,
        /// The original's outcome.
        expected: Box<Outcome>,
        /// The instrumented session's.
        got: Box<Outcome>,
    },
    /// An instrumented session broke the unwind protocol: a rewind that made another call than the one
    /// that unwound, a call that returned while rewinding, more pauses than the plan asks for, …
    #[error("{run}: {message}")]
    Protocol {
        /// Which session.
        run: String,
        /// What went wrong.
        message: String,
    },
}

impl OracleError {
    /// Whether the input was only passed over.
    pub fn is_skip(&self) -> bool {
        matches!(self, Self::Skipped(_))
    }
}

/// The unwind stage's globals of one instrumented instance.
#[derive(Clone, Copy)]
struct UnwindGlobals {
    state: Global,
    sp: Global,
    countdown: Option<Global>,
}

/// What the host of a session knows and decides.
#[derive(Default)]
struct Host {
    /// The current instance's unwind globals (instrumented sessions with the unwind stage only).
    unwind: Option<UnwindGlobals>,
    /// Unwind at these calls of `stasis::point`.
    at_calls: Vec<u64>,
    /// Calls of `stasis::point` so far, not counting those a rewind makes again.
    calls: u64,
    /// The argument of the call that unwound, which the rewind must make again.
    pending: Option<i32>,
    host_calls: Vec<HostCall>,
    /// A breach of the protocol seen by an import; the import then fails the call.
    violation: Option<String>,
}

impl Host {
    /// `stasis::point(x)`: counts the call, and unwinds if the plan says so; when rewinding, checks that
    /// the rewind makes the call that unwound.
    fn point(caller: &mut Caller<'_, Host>, x: i32) -> wasmtime::Result<i32> {
        if let Some(g) = caller.data().unwind {
            if g.state.get(&mut *caller).i32() == Some(REWINDING) {
                g.state.set(&mut *caller, Val::I32(NORMAL))?;
                let pending = caller.data_mut().pending.take();
                if pending != Some(x) {
                    let message = match pending {
                        Some(p) => format!("rewound into point({x}), but point({p}) unwound"),
                        None => format!("rewound into point({x}), but a loop header unwound"),
                    };
                    caller.data_mut().violation = Some(message.clone());
                    wasmtime::bail!(message);
                }
            } else {
                caller.data_mut().calls += 1;
                let calls = caller.data().calls;
                let mut unwind = caller.data().at_calls.contains(&calls);
                if let Some(countdown) = g.countdown {
                    let left = countdown.get(&mut *caller).i32().unwrap_or(0);
                    if left > 0 {
                        countdown.set(&mut *caller, Val::I32(left - 1))?;
                        unwind |= left == 1;
                    }
                }
                if unwind {
                    g.state.set(&mut *caller, Val::I32(UNWINDING))?;
                    caller.data_mut().pending = Some(x);
                    // The result is dropped by the unwinding caller.
                    return Ok(0);
                }
            }
        } else {
            caller.data_mut().calls += 1;
        }
        caller.data_mut().host_calls.push(HostCall::Point(x));
        Ok(x.wrapping_mul(3).wrapping_add(1))
    }
}

fn linker(engine: &Engine) -> wasmtime::Result<Linker<Host>> {
    let mut linker = Linker::new(engine);
    linker.func_wrap("stasis", "point", |mut caller: Caller<'_, Host>, x: i32| {
        Host::point(&mut caller, x)
    })?;
    linker.func_wrap("env", "log", |mut caller: Caller<'_, Host>, x: i32| {
        caller.data_mut().host_calls.push(HostCall::Log(x));
    })?;
    Ok(linker)
}

/// An engine and the host's imports on it.
struct Runner {
    engine: Engine,
    linker: Linker<Host>,
}

impl Runner {
    fn new(limits: &Limits, max_wasm_stack: usize) -> Result<Self, OracleError> {
        let mut config = wasmtime::Config::new();
        config
            .consume_fuel(true)
            .max_wasm_stack(max_wasm_stack)
            .cranelift_opt_level(if limits.optimize {
                OptLevel::Speed
            } else {
                OptLevel::None
            })
            // One input at a time on a shared machine: compiling in parallel buys nothing.
            .parallel_compilation(false);
        let engine = Engine::new(&config).map_err(|e| OracleError::Engine(e.to_string()))?;
        let linker = linker(&engine).map_err(|e| OracleError::Engine(e.to_string()))?;
        Ok(Self { engine, linker })
    }
}

/// The two engines (the instrumented one with a larger stack) and the limits; make one and check many
/// modules with it.
pub struct Oracle {
    original: Runner,
    instrumented: Runner,
    limits: Limits,
}

impl Oracle {
    /// Sets up the engines.
    pub fn new(limits: Limits) -> Result<Self, OracleError> {
        let stack = limits
            .max_wasm_stack
            .checked_mul(limits.stack_factor)
            .ok_or_else(|| OracleError::Engine("the instrumented stack size overflows".into()))?;
        Ok(Self {
            original: Runner::new(&limits, limits.max_wasm_stack)?,
            instrumented: Runner::new(&limits, stack)?,
            limits,
        })
    }

    /// The limits it runs with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Instruments `wasm`, runs the original session and the instrumented one never paused, and compares
    /// them; also runs it with a countdown that never fires, to count the unwind points the session passes.
    /// The [`Subject`] then checks paused sessions against the original's outcome.
    pub fn prepare(&self, wasm: &[u8], calls: &[Call]) -> Result<Subject<'_>, OracleError> {
        let options = InstrumentOptions {
            countdown: true,
            ..self.limits.options.clone()
        };
        let layout = instrument_with(wasm, &options).map_err(Skip::Refused)?;
        let original = Module::new(&self.original.engine, wasm)
            .map_err(|e| Skip::OriginalRejected(format!("{e:#}")))?;
        let mut resolved = Vec::with_capacity(calls.len());
        for call in calls {
            let Some(ExternType::Func(ty)) = original.get_export(&call.export) else {
                return Err(Skip::NoSuchExport(call.export.clone()).into());
            };
            // A non-nullable reference has no value the host could make up.
            if ty.params().all(|p| Val::default_for_ty(&p).is_some()) {
                resolved.push(call.clone());
            }
        }
        let observed = original
            .exports()
            .filter_map(|e| match e.ty() {
                ExternType::Memory(_) => Some(Observed::Memory(e.name().to_owned())),
                ExternType::Global(_) => Some(Observed::Global(e.name().to_owned())),
                _ => None,
            })
            .collect();
        let module = Module::new(&self.instrumented.engine, &layout.wasm)
            .map_err(|e| OracleError::InstrumentedRejected(format!("{e:#}")))?;
        let mut subject = Subject {
            oracle: self,
            calls: resolved,
            observed,
            layout,
            module,
            expected: empty_outcome(),
            unwind_points: 0,
        };
        subject.expected = on_big_stack(self, || subject.run_original(&original))??;
        subject.check(&Plan::never())?;
        if subject
            .layout
            .unwind
            .as_ref()
            .is_some_and(|u| u.countdown_global.is_some())
        {
            let probe = subject.check(&Plan::at_point(i32::MAX))?;
            let left = probe.countdown_left.unwrap_or(i32::MAX);
            subject.unwind_points = u64::try_from(i32::MAX - left).unwrap_or(0);
        }
        Ok(subject)
    }
}

fn empty_outcome() -> Outcome {
    Outcome {
        calls: Vec::new(),
        host_calls: Vec::new(),
        state: None,
        pauses: 0,
        import_calls: 0,
        countdown_left: None,
    }
}

/// Runs `f` on a thread whose stack holds the instrumented engine's wasm stack and the host's frames:
/// wasm runs on the calling thread's stack, and test threads have small ones.
fn on_big_stack<R: Send>(oracle: &Oracle, f: impl FnOnce() -> R + Send) -> Result<R, OracleError> {
    let size = oracle
        .limits
        .max_wasm_stack
        .saturating_mul(oracle.limits.stack_factor)
        .saturating_add(16 << 20);
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("stasis-oracle".into())
            .stack_size(size)
            .spawn_scoped(scope, f)
            .map_err(|e| OracleError::Engine(format!("cannot start the oracle's thread: {e}")))?;
        // A panic in there is a bug to report as it is, not an outcome.
        Ok(handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    })
}

/// An export whose value is part of [`Outcome::state`].
enum Observed {
    Memory(String),
    Global(String),
}

/// A live instance with its store.
struct Live {
    store: Store<Host>,
    instance: Instance,
}

/// Every memory's bytes and every global's value the instrumenter lists, by export name.
struct Capture {
    memories: Vec<(String, Vec<u8>)>,
    globals: Vec<(String, Val)>,
}

/// A module prepared by [`Oracle::prepare`]: instrumented, compiled, its original outcome known and matched
/// by the instrumented module never paused.
pub struct Subject<'o> {
    oracle: &'o Oracle,
    calls: Vec<Call>,
    observed: Vec<Observed>,
    layout: Instrumented,
    module: Module,
    expected: Outcome,
    unwind_points: u64,
}

impl Subject<'_> {
    /// The original session's outcome.
    pub fn expected(&self) -> &Outcome {
        &self.expected
    }

    /// What the instrumenter made of the module.
    pub fn layout(&self) -> &Instrumented {
        &self.layout
    }

    /// Whether calls can be paused mid-way; plans only pause sessions of [`Pausability::MidCall`] modules.
    pub fn pausability(&self) -> &Pausability {
        &self.layout.pausable
    }

    /// How many unwind points (import calls and loop headers) the session passes, never paused.
    pub fn unwind_points(&self) -> u64 {
        self.unwind_points
    }

    /// How many calls of `stasis::point` the session makes.
    pub fn import_calls(&self) -> u64 {
        self.expected.import_calls
    }

    /// Runs an instrumented session paused as `plan` says and checks it against the original's outcome.
    pub fn check(&self, plan: &Plan) -> Result<Outcome, OracleError> {
        let got = self.run(plan)?;
        if let Some(difference) = self.expected.difference(&got) {
            return Err(OracleError::Mismatch {
                run: plan.to_string(),
                difference,
                expected: Box::new(self.expected.clone()),
                got: Box::new(got),
            });
        }
        Ok(got)
    }

    /// Runs an instrumented session paused as `plan` says, without comparing it (a trap while unwinding a
    /// stack too deep for the frame buffer, say, is its outcome).
    pub fn run(&self, plan: &Plan) -> Result<Outcome, OracleError> {
        on_big_stack(self.oracle, || self.run_instrumented(plan))?
    }

    fn run_original(&self, module: &Module) -> Result<Outcome, OracleError> {
        let runner = &self.oracle.original;
        let mut store = Store::new(&runner.engine, Host::default());
        set_fuel(&mut store, self.oracle.limits.fuel)?;
        let mut outcome = empty_outcome();
        let instance = match runner.linker.instantiate(&mut store, module) {
            Ok(instance) => instance,
            Err(e) => {
                let trap = original_trap(&e)?;
                outcome
                    .calls
                    .push(record(INSTANTIATION, Ending::Trapped(trap)));
                return Ok(finish_without_state(outcome, store.into_data()));
            }
        };
        outcome
            .calls
            .push(record(INSTANTIATION, Ending::Returned(Vec::new())));
        for call in &self.calls {
            let func = instance
                .get_func(&mut store, &call.export)
                .ok_or_else(|| Skip::NoSuchExport(call.export.clone()))?;
            let (params, mut results) = arguments(&func.ty(&store), &call.args);
            let ending = match func.call(&mut store, &params, &mut results) {
                Ok(()) => Ending::Returned(results.iter().map(Value::from).collect()),
                Err(e) => Ending::Trapped(original_trap(&e)?),
            };
            outcome.calls.push(record(&call.export, ending));
        }
        outcome.state = Some(
            digest(&mut store, &instance, &self.observed)
                .map_err(|e| Skip::OriginalFailed(e.to_string()))?,
        );
        let host = store.into_data();
        outcome.host_calls = host.host_calls;
        outcome.import_calls = host.calls;
        Ok(outcome)
    }

    fn run_instrumented(&self, plan: &Plan) -> Result<Outcome, OracleError> {
        let run = plan.to_string();
        let protocol = |message: String| OracleError::Protocol {
            run: run.clone(),
            message,
        };
        let mut session = Session {
            subject: self,
            countdowns: plan.countdowns.clone().into_iter(),
            pauses: 0,
            max_pauses: plan.max_pauses(),
            protocol: &protocol,
        };
        let host = Host {
            at_calls: plan.at_calls.clone(),
            ..Host::default()
        };
        let mut outcome = empty_outcome();
        let mut live = match session.fresh(host)? {
            Ok(live) => live,
            Err((trap, host)) => {
                outcome
                    .calls
                    .push(record(INSTANTIATION, Ending::Trapped(trap)));
                return Ok(finish_without_state(outcome, host));
            }
        };
        session.load_countdown(&mut live)?;
        // The original runs its start function while instantiating; here the host calls it, and a pause in
        // it is like one in any other call.
        let start = match &self.layout.start_export {
            Some(_) => session.call(&mut live, START_EXPORT, &[])?,
            None => Ending::Returned(Vec::new()),
        };
        let start_trapped = matches!(start, Ending::Trapped(_));
        outcome.calls.push(record(INSTANTIATION, start));
        if start_trapped {
            outcome.pauses = session.pauses;
            return Ok(finish_without_state(outcome, live.store.into_data()));
        }
        for call in &self.calls {
            let ending = session.call(&mut live, &call.export, &call.args)?;
            outcome.calls.push(record(&call.export, ending));
        }
        outcome.state = Some(
            digest(&mut live.store, &live.instance, &self.observed)
                .map_err(|e| protocol(e.to_string()))?,
        );
        outcome.pauses = session.pauses;
        outcome.countdown_left = match live.store.data().unwind.and_then(|g| g.countdown) {
            Some(countdown) => countdown.get(&mut live.store).i32(),
            None => None,
        };
        let host = live.store.into_data();
        outcome.host_calls = host.host_calls;
        outcome.import_calls = host.calls;
        Ok(outcome)
    }
}

/// The state of one instrumented session across its instances.
struct Session<'s, 'o> {
    subject: &'s Subject<'o>,
    countdowns: std::vec::IntoIter<i32>,
    pauses: usize,
    max_pauses: usize,
    protocol: &'s dyn Fn(String) -> OracleError,
}

impl Session<'_, '_> {
    /// A fresh instance on a fresh store with `host` and a full tank of fuel, or the trap that ended its
    /// instantiation.
    fn fresh(&self, mut host: Host) -> Result<Result<Live, (Trap, Host)>, OracleError> {
        let runner = &self.subject.oracle.instrumented;
        let limits = &self.subject.oracle.limits;
        host.unwind = None;
        let mut store = Store::new(&runner.engine, host);
        set_fuel(
            &mut store,
            limits.fuel.saturating_mul(limits.fuel_factor.max(1)),
        )?;
        let instance = match runner.linker.instantiate(&mut store, &self.subject.module) {
            Ok(instance) => instance,
            Err(e) => {
                return match e.downcast_ref::<Trap>() {
                    Some(trap) => Ok(Err((*trap, store.into_data()))),
                    None => Err((self.protocol)(format!(
                        "the instrumented module failed to instantiate: {e:#}"
                    ))),
                };
            }
        };
        if let Some(unwind) = &self.subject.layout.unwind {
            let mut global = |index: u32| {
                instance
                    .get_global(&mut store, &global_export_name(index))
                    .ok_or_else(|| {
                        (self.protocol)(format!("unwind global {index} is not exported"))
                    })
            };
            let globals = UnwindGlobals {
                state: global(unwind.state_global)?,
                sp: global(unwind.sp_global)?,
                countdown: unwind.countdown_global.map(&mut global).transpose()?,
            };
            store.data_mut().unwind = Some(globals);
        }
        Ok(Ok(Live { store, instance }))
    }

    /// Loads the plan's next countdown, if it has one left.
    fn load_countdown(&mut self, live: &mut Live) -> Result<(), OracleError> {
        let Some(countdown) = live.store.data().unwind.and_then(|g| g.countdown) else {
            return Ok(());
        };
        if let Some(n) = self.countdowns.next() {
            countdown
                .set(&mut live.store, Val::I32(n))
                .map_err(|e| (self.protocol)(format!("cannot load the countdown: {e}")))?;
        }
        Ok(())
    }

    /// Calls `export` until it returns or traps, pausing whenever it unwinds: capture, fresh instance,
    /// restore, rewind. `live` is the instance the session goes on with.
    fn call(&mut self, live: &mut Live, export: &str, args: &[i64]) -> Result<Ending, OracleError> {
        let protocol = self.protocol;
        loop {
            let func: Func = live
                .instance
                .get_func(&mut live.store, export)
                .ok_or_else(|| protocol(format!("the instrumented module lacks `{export}`")))?;
            let (params, mut results) = arguments(&func.ty(&live.store), args);
            let result = func.call(&mut live.store, &params, &mut results);
            if let Some(violation) = live.store.data_mut().violation.take() {
                return Err(protocol(violation));
            }
            let globals = live.store.data().unwind;
            if let Err(e) = result {
                let trap = e
                    .downcast_ref::<Trap>()
                    .copied()
                    .ok_or_else(|| protocol(format!("`{export}` failed without a trap: {e:#}")))?;
                // A trap ends the call wherever it was, as in the original; frames a trapped unwind left
                // behind belong to no call, and the next call starts afresh.
                if let Some(g) = globals {
                    set(&mut live.store, g.state, NORMAL, protocol)?;
                    set(&mut live.store, g.sp, 0, protocol)?;
                }
                live.store.data_mut().pending = None;
                return Ok(Ending::Trapped(trap));
            }
            let Some(g) = globals else {
                return Ok(Ending::Returned(results.iter().map(Value::from).collect()));
            };
            match g.state.get(&mut live.store).i32() {
                Some(UNWINDING) => {
                    self.pauses += 1;
                    if self.pauses > self.max_pauses {
                        return Err(protocol(format!(
                            "paused {} times, but the plan asks for at most {}",
                            self.pauses, self.max_pauses
                        )));
                    }
                    let capture = self.capture(live)?;
                    let host = std::mem::take(live.store.data_mut());
                    *live = match self.fresh(host)? {
                        Ok(fresh) => fresh,
                        Err((trap, _)) => {
                            return Err(protocol(format!(
                                "a fresh instance trapped while instantiating: {trap}"
                            )));
                        }
                    };
                    self.restore(live, &capture)?;
                    let g = live.store.data().unwind.ok_or_else(|| {
                        protocol("the fresh instance has no unwind globals".into())
                    })?;
                    set(&mut live.store, g.state, REWINDING, protocol)?;
                    self.load_countdown(live)?;
                }
                Some(NORMAL) | Some(REQUESTED) => {
                    if g.sp.get(&mut live.store).i32() != Some(0) {
                        return Err(protocol(format!(
                            "`{export}` returned with frames left in the frame buffer"
                        )));
                    }
                    if let Some(p) = live.store.data_mut().pending.take() {
                        return Err(protocol(format!(
                            "`{export}` returned, but the rewind never remade point({p})"
                        )));
                    }
                    return Ok(Ending::Returned(results.iter().map(Value::from).collect()));
                }
                other => {
                    return Err(protocol(format!(
                        "`{export}` returned in unwind state {other:?}"
                    )));
                }
            }
        }
    }

    fn capture(&self, live: &mut Live) -> Result<Capture, OracleError> {
        let protocol = self.protocol;
        let layout = &self.subject.layout;
        let mut memories = Vec::with_capacity(layout.memories.len());
        for m in &layout.memories {
            let memory = live
                .instance
                .get_memory(&mut live.store, &m.export_name)
                .ok_or_else(|| protocol(format!("memory `{}` is not exported", m.export_name)))?;
            memories.push((m.export_name.clone(), memory.data(&live.store).to_vec()));
        }
        let mut globals = Vec::with_capacity(layout.globals.len());
        for g in &layout.globals {
            let global = live
                .instance
                .get_global(&mut live.store, &g.export_name)
                .ok_or_else(|| protocol(format!("global `{}` is not exported", g.export_name)))?;
            globals.push((g.export_name.clone(), global.get(&mut live.store)));
        }
        Ok(Capture { memories, globals })
    }

    fn restore(&self, live: &mut Live, capture: &Capture) -> Result<(), OracleError> {
        let protocol = self.protocol;
        for (name, bytes) in &capture.memories {
            let memory = live
                .instance
                .get_memory(&mut live.store, name)
                .ok_or_else(|| protocol(format!("memory `{name}` is not exported")))?;
            let page = memory.page_size(&live.store);
            let pages = (bytes.len() as u64).div_ceil(page);
            let current = memory.size(&live.store);
            memory
                .grow(&mut live.store, pages.saturating_sub(current))
                .map_err(|e| protocol(format!("cannot grow memory `{name}`: {e}")))?;
            memory.data_mut(&mut live.store)[..bytes.len()].copy_from_slice(bytes);
        }
        for (name, value) in &capture.globals {
            live.instance
                .get_global(&mut live.store, name)
                .ok_or_else(|| protocol(format!("global `{name}` is not exported")))?
                .set(&mut live.store, *value)
                .map_err(|e| protocol(format!("cannot restore global `{name}`: {e}")))?;
        }
        Ok(())
    }
}

fn set(
    store: &mut Store<Host>,
    global: Global,
    value: i32,
    protocol: &dyn Fn(String) -> OracleError,
) -> Result<(), OracleError> {
    global
        .set(store, Val::I32(value))
        .map_err(|e| protocol(format!("cannot set an unwind global: {e}")))
}

fn set_fuel(store: &mut Store<Host>, fuel: u64) -> Result<(), OracleError> {
    store
        .set_fuel(fuel)
        .map_err(|e| OracleError::Engine(format!("cannot set fuel: {e}")))
}

fn record(export: &str, ending: Ending) -> CallRecord {
    CallRecord {
        export: export.to_owned(),
        ending,
    }
}

fn finish_without_state(mut outcome: Outcome, host: Host) -> Outcome {
    outcome.host_calls = host.host_calls;
    outcome.import_calls = host.calls;
    outcome
}

/// The trap that ended an original call, or why the input is skipped.
fn original_trap(error: &wasmtime::Error) -> Result<Trap, Skip> {
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Err(Skip::OriginalOutOfFuel),
        Some(Trap::StackOverflow) => Err(Skip::OriginalStackOverflow),
        Some(trap) => Ok(*trap),
        None => Err(Skip::OriginalFailed(format!("{error:#}"))),
    }
}

/// The arguments of a call as [`Call::args`] describes them, and room for its results.
fn arguments(ty: &FuncType, args: &[i64]) -> (Vec<Val>, Vec<Val>) {
    let params = ty
        .params()
        .enumerate()
        .map(|(i, p)| {
            let arg = args.get(i).copied().unwrap_or(0);
            match p {
                ValType::I32 => Val::I32(arg as i32),
                ValType::I64 => Val::I64(arg),
                ValType::F32 => Val::F32((arg as f32).to_bits()),
                ValType::F64 => Val::F64((arg as f64).to_bits()),
                ValType::V128 => Val::V128(V128::from(0u128)),
                // Calls with non-nullable references were left out; a nullable one is null.
                ValType::Ref(_) => Val::default_for_ty(&p).unwrap_or(Val::I32(0)),
            }
        })
        .collect();
    let results = vec![Val::I32(0); ty.results().len()];
    (params, results)
}

/// SHA-256 of the observed exports.
fn digest(
    store: &mut Store<Host>,
    instance: &Instance,
    observed: &[Observed],
) -> Result<[u8; 32], String> {
    let mut hasher = Sha256::new();
    for o in observed {
        match o {
            Observed::Memory(name) => {
                let memory = instance
                    .get_memory(&mut *store, name)
                    .ok_or_else(|| format!("memory `{name}` is not exported"))?;
                hasher.update(name.as_bytes());
                hasher.update(memory.size(&*store).to_le_bytes());
                hasher.update(memory.data(&*store));
            }
            Observed::Global(name) => {
                let global = instance
                    .get_global(&mut *store, name)
                    .ok_or_else(|| format!("global `{name}` is not exported"))?;
                let value = Value::from(&global.get(&mut *store));
                hasher.update(name.as_bytes());
                hasher.update(format!("{value:?}").as_bytes());
            }
        }
    }
    Ok(hasher.finalize().into())
}

/// A module made from arbitrary bytes by [`generate`], and the calls of its session.
#[derive(Debug, Clone)]
pub struct Case {
    /// The module.
    pub wasm: Vec<u8>,
    /// Every exported function, in export order, with small arguments.
    pub calls: Vec<Call>,
}

/// The module wasm-smith may import from: the oracle's host.
fn available_imports() -> Vec<u8> {
    use wasm_encoder::{EntityType, ImportSection, TypeSection, ValType};
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32], [ValType::I32]);
    types.ty().function([ValType::I32], []);
    let mut imports = ImportSection::new();
    imports.import("stasis", "point", EntityType::Function(0));
    imports.import("env", "log", EntityType::Function(1));
    let mut module = wasm_encoder::Module::new();
    module.section(&types).section(&imports);
    module.finish()
}

/// Makes a module of `u` with wasm-smith: small, importing only the oracle's host, exporting everything,
/// with only the features the unwind stage makes pausable (no exceptions, tail calls, GC, threads or table
/// mutation), NaNs canonicalised so that floats compare, and a fuel global of wasm-smith's
/// (`ensure_termination`) that traps after a bounded number of loop iterations and calls.
pub fn generate(u: &mut Unstructured<'_>) -> Result<Case, Skip> {
    let skip = |e: arbitrary::Error| Skip::Generator(e.to_string());
    // wasmtime is built without GC, so it refuses `externref` (a GC type there); with reference types on,
    // many modules are refused, so only one in four has them.
    let reference_types = u.ratio(1, 4).map_err(skip)?;
    let mut config = wasm_smith::Config {
        available_imports: Some(available_imports()),
        export_everything: true,
        allow_start_export: true,
        max_imports: 4,
        max_funcs: 8,
        max_types: 8,
        max_instructions: u.int_in_range(4..=80).map_err(skip)?,
        max_globals: 6,
        max_memories: u.int_in_range(0..=2).map_err(skip)?,
        max_memory32_bytes: 4 << 16,
        max_memory64_bytes: 4 << 16,
        memory_max_size_required: true,
        max_tables: 1,
        max_table_elements: 16,
        table_max_size_required: true,
        max_data_segments: 4,
        max_element_segments: 4,
        max_elements: 8,
        max_tags: 0,
        exceptions_enabled: false,
        gc_enabled: false,
        custom_descriptors_enabled: false,
        tail_call_enabled: false,
        threads_enabled: false,
        shared_everything_threads_enabled: false,
        relaxed_simd_enabled: false,
        wide_arithmetic_enabled: false,
        reference_types_enabled: reference_types,
        simd_enabled: u.arbitrary().map_err(skip)?,
        memory64_enabled: u.arbitrary().map_err(skip)?,
        allow_floats: u.arbitrary().map_err(skip)?,
        canonicalize_nans: true,
        // Half the modules avoid traps, so that their runs get further.
        disallow_traps: u.arbitrary().map_err(skip)?,
        ..wasm_smith::Config::default()
    };
    // Every kind but table and reference instructions: table mutations and `elem.drop` (a reference
    // instruction to wasm-smith) make the instrumenter refuse the module, and a reference on the operand
    // stack at an unwind point makes it not pausable.
    config.allowed_instructions = wasm_smith::InstructionKinds::new(&[
        wasm_smith::InstructionKind::Numeric,
        wasm_smith::InstructionKind::Vector,
        wasm_smith::InstructionKind::Parametric,
        wasm_smith::InstructionKind::Variable,
        wasm_smith::InstructionKind::Memory,
        wasm_smith::InstructionKind::Control,
    ]);
    let guest_fuel = u.int_in_range(1..=2_000u32).map_err(skip)?;
    let mut module = wasm_smith::Module::new(config, u).map_err(skip)?;
    module
        .ensure_termination(guest_fuel)
        .map_err(|e| Skip::Generator(e.to_string()))?;
    let wasm = module.to_bytes();
    let mut calls = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(&wasm) {
        let Ok(wasmparser::Payload::ExportSection(exports)) = payload else {
            continue;
        };
        for export in exports.into_iter().flatten() {
            if export.kind == wasmparser::ExternalKind::Func {
                let args = (0..4)
                    .map(|_| u.int_in_range(-3..=64i64).unwrap_or(0))
                    .collect::<Vec<_>>();
                calls.push(Call::new(export.name, args));
            }
        }
    }
    Ok(Case { wasm, calls })
}

/// Random pause plans for a session that passes `unwind_points` unwind points, `import_calls` of them calls
/// of `stasis::point`: one pause at a random point, one at a random import call, several of both, and a
/// pause at every one of the first 64 points. None when nothing can unwind.
pub fn plans(u: &mut Unstructured<'_>, unwind_points: u64, import_calls: u64) -> Vec<Plan> {
    let points = i32::try_from(unwind_points).unwrap_or(i32::MAX);
    if points == 0 {
        return Vec::new();
    }
    let mut plans = vec![Plan::at_point(u.int_in_range(1..=points).unwrap_or(1))];
    if import_calls > 0 {
        plans.push(Plan::at_call(u.int_in_range(1..=import_calls).unwrap_or(1)));
    }
    let n = u.int_in_range(2..=6).unwrap_or(2);
    let spread = (points / n).max(1);
    plans.push(Plan {
        at_calls: match import_calls {
            0 => Vec::new(),
            calls => (0..u.int_in_range(0..=3).unwrap_or(0))
                .map(|_| u.int_in_range(1..=calls).unwrap_or(1))
                .collect(),
        },
        countdowns: (0..n)
            .map(|_| u.int_in_range(1..=spread).unwrap_or(1))
            .collect(),
    });
    plans.push(Plan {
        at_calls: Vec::new(),
        countdowns: vec![1; points.min(64) as usize],
    });
    plans
}

/// What [`check_bytes`] did with an input that was not skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Whether the module could be paused mid-call.
    pub pausability: Pausability,
    /// Unwind points its session passes.
    pub unwind_points: u64,
    /// Pause plans checked besides never pausing.
    pub plans: usize,
    /// Pauses made by them in all.
    pub pauses: usize,
}

/// The fuzzing entry: a module generated from `data`, its session checked never paused and then paused by
/// random plans drawn from the rest of `data`.
pub fn check_bytes(oracle: &Oracle, data: &[u8]) -> Result<Report, OracleError> {
    let mut u = Unstructured::new(data);
    let case = generate(&mut u)?;
    let subject = oracle.prepare(&case.wasm, &case.calls)?;
    let mut report = Report {
        pausability: subject.pausability().clone(),
        unwind_points: subject.unwind_points(),
        plans: 0,
        pauses: 0,
    };
    if subject.pausability().mid_call() {
        for plan in plans(&mut u, subject.unwind_points(), subject.import_calls()) {
            let got = subject.check(&plan)?;
            report.plans += 1;
            report.pauses += got.pauses;
        }
    }
    Ok(report)
}
