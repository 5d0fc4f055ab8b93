//! Commands as processes of their own: a command module prepared under the sandbox's lock
//! ([`crate::Sandbox::start_command`]) and run to completion on any thread ([`Command::run`]), with its
//! output streamed as written and its stdin a pipe the host writes to while it runs.
//!
//! A command's store is its own and the disk quota is shared through an `Arc`, so running one needs nothing
//! of the sandbox: the caller prepares it under the sandbox's lock and runs it after releasing the lock,
//! and other calls on the sandbox proceed meanwhile.
//!
//! Stopping: a [`CommandControl`] ends a running command from any thread. Wasm code is stopped at its next
//! epoch check (within one epoch tick), a guest sleeping in `poll_oneoff` or waiting on its stdin pipe is
//! woken, and the command ends with exit code 128 + the signal ([`StopReason::exit_code`]) and the reason in
//! [`CommandOutput::trap`]. Killing (dropping) a sandbox ends its commands ([`StopReason::SandboxGone`]).
//!
//! Pausing: a command whose module the unwind stage rewrote ([`crate::instrument::Pausability::MidCall`])
//! is *suspended* — it unwinds at its next unwind point (a sleep, a read of its stdin, a loop header), its
//! stack is saved in the blob with everything else, and [`Command::run`] returns with
//! [`CommandOutput::suspended`]; after the resume, [`crate::Sandbox::continue_command`] gives a `Command` that
//! continues exactly where it was. A snapshot suspends it the same way and rewinds it in place at once. A
//! command that cannot be suspended is ended by a pause ([`StopReason::Pause`]), as before the unwind stage.
//!
//! CPU time: the sandbox's `cpu_time_per_call` bounds the epoch ticks a command spends *running wasm*;
//! time blocked in host calls (sleeping, waiting for stdin) does not count, so a background command may
//! wait as long as it likes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap, UpdateDeadline, Val};

use crate::instrument::unwind::{NORMAL, REQUESTED};
use crate::process::{Process, ProcessData, RunEnd, run_suspendable};
use crate::wasi::{Interrupt, OutputSink, ProcExit, Stdin, StopReason, Stopped};

/// Stops a command and observes its end, from any thread. Cheap to clone.
pub type CommandControl = crate::running::Control;

/// The standard streams of a command.
#[derive(Debug)]
pub struct CommandIo {
    /// Standard input: bytes, or a [`crate::wasi::StdinPipe`] the host writes to while the command runs.
    pub stdin: Stdin,
    /// Standard output: captured, streamed ([`OutputSink::stream`]) or both.
    pub stdout: OutputSink,
    /// Standard error.
    pub stderr: OutputSink,
}

/// What a command module printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit code: the guest's own, 0 when `_start` returned, 134 when it trapped (as `wasmtime run`),
    /// 128 + the signal when it was stopped from outside. Meaningless when [`CommandOutput::suspended`].
    pub exit_code: i32,
    /// What was captured of stdout (up to the sandbox's output limit; empty for a streaming sink).
    pub stdout: Vec<u8>,
    /// What was captured of stderr.
    pub stderr: Vec<u8>,
    /// Why the guest trapped or was stopped, if it was (a CPU timeout says so).
    pub trap: Option<String>,
    /// Why it was stopped from outside, if it was.
    pub stopped: Option<StopReason>,
    /// The command did not end: its sandbox was paused and the command was saved with it, mid-run; it
    /// continues after the resume ([`crate::Sandbox::continue_command`]).
    pub suspended: bool,
}

/// A command ready to run: instantiated (or restored, suspended), not started.
pub struct Command {
    pub(crate) process: Option<Box<Process>>,
    pub(crate) control: CommandControl,
    pub(crate) cpu_limit: Duration,
    /// The wall-time limit of the whole command, and when it runs out (`None`: too far to represent).
    pub(crate) wall_limit: Duration,
    pub(crate) wall_deadline: Option<Instant>,
    /// Epoch ticks spent running wasm so far (what the CPU limit counts), and the tick's length.
    pub(crate) ticks_used: Arc<AtomicU64>,
    pub(crate) tick: Duration,
    /// Wall time already used before this run (by the run before a pause), and when this one started.
    pub(crate) wall_used: Duration,
    pub(crate) started: Instant,
    /// The instance already holds its initialised state (a program started from its pre-initialised
    /// image): its start function and `_initialize` are not run again.
    pub(crate) initialized: bool,
}

impl Command {
    /// A handle to stop the command and wait for its end.
    pub fn control(&self) -> CommandControl {
        self.control.clone()
    }

    /// Makes the command unwind at its `n`-th unwind point, as if its sandbox were being paused there, and
    /// wait (parked, [`crate::Control::is_parked`]) for a pause or snapshot to take it: what deterministic
    /// tests pause with. Needs a runtime instrumenting with
    /// [`crate::instrument::InstrumentOptions::countdown`].
    pub fn set_unwind_countdown(&mut self, n: u32) -> Result<(), crate::CallError> {
        match self.process.as_mut() {
            Some(process) => process.set_countdown(n),
            None => Err(crate::CallError::NoMainProcess),
        }
    }

    /// Runs the command to completion — or to its suspension by a pause — and reports how it ended
    /// (blocking: call it off any async runtime).
    pub fn run(mut self) -> CommandOutput {
        let Some(mut process) = self.process.take() else {
            return self.ended(
                None,
                Err(wasmtime::Error::msg("the command has no process")),
            );
        };
        let resumed = process.suspended.take();
        let (export, args) = match &resumed {
            Some(call) => (
                call.export.clone(),
                call.args
                    .iter()
                    .map(crate::process::state_to_val)
                    .collect::<Vec<_>>(),
            ),
            None => {
                let template = process.template.clone();
                let instance = process.instance;
                if !self.initialized {
                    let cpu = process.store.data().limits.usage().running();
                    let initialized =
                        crate::instantiate::initialize(&template, &mut process.store, &instance);
                    drop(cpu);
                    if let Err(error) = initialized {
                        return self.ended(Some(process), Err(error));
                    }
                }
                if template.kind() == crate::template::ModuleKind::Reactor {
                    // A reactor program: its `main` handler, with an empty request, is the program.
                    match process.write_request(&[]) {
                        Ok((ptr, len)) => (
                            crate::kernel::spawn::MAIN_EXPORT.to_owned(),
                            vec![Val::I32(ptr), Val::I32(len)],
                        ),
                        Err(error) => {
                            return self.ended(Some(process), Err(wasmtime::Error::new(error)));
                        }
                    }
                } else {
                    ("_start".to_owned(), Vec::new())
                }
            }
        };
        let resuming = resumed.is_some();
        let (ticks, tick, started, wall_used) = (
            self.ticks_used.clone(),
            self.tick,
            self.started,
            self.wall_used,
        );
        let budget = move |_: &mut Process| {
            let cpu = tick
                .saturating_mul(u32::try_from(ticks.load(Ordering::Relaxed)).unwrap_or(u32::MAX));
            (
                u64::try_from(cpu.as_millis()).unwrap_or(u64::MAX),
                u64::try_from((wall_used + started.elapsed()).as_millis()).unwrap_or(u64::MAX),
            )
        };
        let control = self.control.clone();
        match run_suspendable(process, &export, &args, resuming, &control, budget) {
            RunEnd::Returned(mut process, values) if export != "_start" => {
                let status = main_status(&mut process, &values, self.cpu_limit);
                self.ended(Some(process), status)
            }
            RunEnd::Returned(process, _) => self.ended(Some(process), Ok(())),
            RunEnd::Failed(process, error) => self.ended(Some(process), Err(error)),
            RunEnd::Released => {
                control.finish(None);
                CommandOutput {
                    exit_code: 0,
                    stdout: Vec::new(),
                    stderr: Vec::new(),
                    trap: None,
                    stopped: None,
                    suspended: true,
                }
            }
        }
    }

    /// The output of a command that ended with `outcome`.
    fn ended(&self, process: Option<Box<Process>>, outcome: wasmtime::Result<()>) -> CommandOutput {
        let stopped = self.control.stopped();
        let (exit_code, trap, stopped) = match outcome {
            Ok(()) => (0, None, None),
            Err(error) => {
                let stop = error.downcast_ref::<Stopped>().map(|s| s.0);
                match (error.downcast_ref::<ProcExit>(), stop.or(stopped)) {
                    (Some(exit), None) => (exit.0, None, None),
                    // Stopped from outside: whatever the guest did on the way out (a panic when its sleep
                    // was cut short), the stop is what ended it.
                    (_, Some(reason)) => {
                        (reason.exit_code(), Some(reason.to_string()), Some(reason))
                    }
                    (None, None)
                        if matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt)) =>
                    {
                        let message = if self.wall_deadline.is_some_and(|d| Instant::now() >= d) {
                            format!(
                                "the command exceeded its wall-time limit of {:?}",
                                self.wall_limit
                            )
                        } else {
                            format!(
                                "the command exceeded its CPU time limit of {:?}",
                                self.cpu_limit
                            )
                        };
                        (134, Some(message), None)
                    }
                    (None, None) => (134, Some(format!("{error:?}")), None),
                }
            }
        };
        let (stdout, stderr) = match process {
            Some(mut process) => {
                let wasi = &mut process.store.data_mut().wasi;
                (wasi.take_stdout(), wasi.take_stderr())
            }
            None => (Vec::new(), Vec::new()),
        };
        self.control.finish(None);
        CommandOutput {
            exit_code,
            stdout,
            stderr,
            trap,
            stopped,
            suspended: false,
        }
    }
}

impl Drop for Command {
    fn drop(&mut self) {
        if self.process.is_some() {
            // Never run: nothing comes back to the sandbox.
            self.control.finish(None);
        }
        self.control.done();
    }
}

/// How a reactor program's `main` handler ended, from its packed response: `proc_exit` with its status
/// (so [`Command::run`] reports it as a command's), or the failure the response describes.
fn main_status(process: &mut Process, values: &[Val], cpu_limit: Duration) -> wasmtime::Result<()> {
    let packed = values
        .first()
        .and_then(Val::i64)
        .ok_or_else(|| wasmtime::Error::msg("the main handler returned no response"))?;
    // The status is a few digits: a longer response is a guest bug, not something to copy.
    let response = process
        .read_response(packed, 64, cpu_limit)
        .map_err(wasmtime::Error::new)?;
    let status = std::str::from_utf8(&response)
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
        .ok_or_else(|| {
            wasmtime::Error::msg(format!(
                "the main handler's response {:?} is not an exit status",
                String::from_utf8_lossy(&response)
            ))
        })?;
    Err(wasmtime::Error::new(ProcExit(status)))
}

/// A command of `process`, its budgets armed for a sandbox with `limits` less what it used before a pause
/// (`cpu_used`, `wall_used`), with `stdin` as what its control wakes: ready to [`Command::run`].
pub(crate) fn prepare(
    engine: &crate::engine::StasisEngine,
    limits: &crate::limits::SandboxLimits,
    mut process: Box<Process>,
    stdin: crate::running::StdinWake,
    (cpu_used, wall_used): (Duration, Duration),
) -> Command {
    let budget_ticks = engine
        .ticks_for(limits.cpu_time_per_call.saturating_sub(cpu_used))
        .max(1);
    let wall_left = limits.wall_time_per_command.saturating_sub(wall_used);
    let wall_deadline = Instant::now().checked_add(wall_left);
    let ticks_used = Arc::new(AtomicU64::new(0));
    arm(
        &mut process.store,
        process.interrupt.clone(),
        budget_ticks,
        ticks_used.clone(),
        wall_deadline,
    );
    let control = crate::running::Control::new(&process, stdin, engine.engine().clone());
    Command {
        process: Some(process),
        control,
        cpu_limit: limits.cpu_time_per_call,
        wall_limit: limits.wall_time_per_command,
        wall_deadline,
        ticks_used,
        tick: engine.epoch_tick(),
        wall_used,
        started: Instant::now(),
        initialized: false,
    }
}

/// Makes `store` stoppable and suspendable through `interrupt`, bounds the ticks it spends running wasm by
/// `budget_ticks` (counting them in `used`), and its whole run by `wall_deadline`: the epoch deadline is one
/// tick ahead, and each time it passes the callback checks for a stop request, turns a suspend request into
/// the guest's `REQUESTED` state (when the running call may be suspended), checks the wall deadline, and
/// counts the tick. Host sleeps and stdin waits do not use up ticks, but end at the wall deadline.
pub(crate) fn arm(
    store: &mut Store<ProcessData>,
    interrupt: Arc<Interrupt>,
    budget_ticks: u64,
    used: Arc<AtomicU64>,
    wall_deadline: Option<Instant>,
) {
    store.epoch_deadline_callback(move |mut ctx| {
        if let Some(reason) = interrupt.stopped() {
            return Err(wasmtime::Error::new(Stopped(reason)));
        }
        if interrupt.suspend_requested()
            && ctx.data().wasi.suspendable()
            && let Some(globals) = ctx.data().wasi.unwind_globals()
            && globals.state.get(&mut ctx).i32() == Some(NORMAL)
        {
            globals.state.set(&mut ctx, Val::I32(REQUESTED))?;
        }
        let spent = used.fetch_add(1, Ordering::Relaxed) + 1;
        if spent >= budget_ticks || wall_deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(UpdateDeadline::Interrupt);
        }
        Ok(UpdateDeadline::Continue(1))
    });
    store.set_epoch_deadline(1);
    store.data_mut().wasi.set_deadline(wall_deadline);
}
