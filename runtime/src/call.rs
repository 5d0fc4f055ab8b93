//! Handler calls out of the sandbox's lock: [`crate::Sandbox::start_call`] takes a reactor process out of its
//! sandbox and [`ProcessCall::run`] calls one of its handlers on any thread, so that the sandbox stays
//! available meanwhile — to list its processes, run commands, or pause. A pause that comes during the call
//! suspends it (when the module can be paused mid-call): the call's stack is saved with the sandbox, the
//! caller gets [`CallError::Suspended`], and after the resume the call finishes on its own
//! ([`crate::Sandbox::continue_call`]) with its full effect on the process's state — its answer goes nowhere,
//! as the client's connection ended with the pause.
//!
//! A process suspended in a call (restored from a blob) finishes that call before it takes a new one, so
//! calls keep their order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtime::Val;

use crate::process::{CallError, Process, RunEnd, millis_since, run_suspendable, state_to_val};
use crate::running::Control;

/// What a handler call gave, and what the process printed during it.
#[derive(Debug)]
pub struct CallOutput {
    /// The handler's response, or why there is none.
    pub result: Result<Vec<u8>, CallError>,
    /// What the process wrote to stdout during the call.
    pub stdout: Vec<u8>,
    /// What it wrote to stderr.
    pub stderr: Vec<u8>,
}

/// A process back from a handler call, with the call's answer.
type Answered = (Box<Process>, Result<Vec<u8>, CallError>);

/// A handler call ready to run outside its sandbox.
pub struct ProcessCall {
    pub(crate) process: Option<Box<Process>>,
    pub(crate) control: Control,
    /// The handler and its request; `None` to only finish the call the process is suspended in.
    pub(crate) call: Option<(String, Vec<u8>)>,
    pub(crate) ticks: u64,
    pub(crate) tick: Duration,
    pub(crate) cpu_limit: Duration,
    pub(crate) max_response: u64,
    /// Leave what the process prints in its buffers (for [`crate::Sandbox::take_stdout`]) rather than
    /// return it in the [`CallOutput`].
    pub(crate) keep_output: bool,
}

impl ProcessCall {
    /// A handle to stop the call or wait for it, from any thread.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// Makes the call unwind at its `n`-th unwind point, as if its sandbox were being paused there, and
    /// wait (parked, [`crate::Control::is_parked`]) for a pause or snapshot to take it: what deterministic
    /// tests pause with. Needs a runtime instrumenting with
    /// [`crate::instrument::InstrumentOptions::countdown`].
    pub fn set_unwind_countdown(&mut self, n: u32) -> Result<(), crate::CallError> {
        match self.process.as_mut() {
            Some(process) => process.set_countdown(n),
            None => Err(crate::CallError::NoMainProcess),
        }
    }

    /// Runs the call (first finishing the call the process is suspended in, if it is) and gives the process
    /// back to its sandbox. Blocking: call it off any async runtime.
    pub fn run(mut self) -> CallOutput {
        let Some(process) = self.process.take() else {
            return CallOutput {
                result: Err(CallError::NoMainProcess),
                stdout: Vec::new(),
                stderr: Vec::new(),
            };
        };
        let mut process = match self.finish_suspended(process) {
            Ok(process) => process,
            Err(output) => return output,
        };
        let result = match self.call.take() {
            Some((name, request)) => match self.call_handler(process, &name, &request) {
                Ok((back, result)) => {
                    process = back;
                    result
                }
                Err(output) => return output,
            },
            None => Ok(Vec::new()),
        };
        let (stdout, stderr) = if self.keep_output {
            (Vec::new(), Vec::new())
        } else {
            let wasi = &mut process.store.data_mut().wasi;
            (wasi.take_stdout(), wasi.take_stderr())
        };
        self.control.finish(Some(process));
        CallOutput {
            result,
            stdout,
            stderr,
        }
    }

    /// Arms the process for a call with `cpu_used` of its budget already spent.
    fn arm(&self, process: &mut Process, cpu_used: Duration) -> (Arc<AtomicU64>, Instant) {
        let used = Arc::new(AtomicU64::new(0));
        let left = self.cpu_limit.saturating_sub(cpu_used);
        let ticks = (self.ticks as u128 * left.as_nanos())
            .checked_div(self.cpu_limit.as_nanos())
            .unwrap_or(0)
            .max(1) as u64;
        let start = Instant::now();
        crate::command::arm(
            &mut process.store,
            process.interrupt.clone(),
            ticks,
            used.clone(),
            start.checked_add(left),
        );
        (used, start)
    }

    /// Finishes the call `process` is suspended in (its answer is freed and dropped; what it printed too).
    fn finish_suspended(&mut self, mut process: Box<Process>) -> Result<Box<Process>, CallOutput> {
        let Some(suspended) = process.suspended.take() else {
            return Ok(process);
        };
        let args: Vec<Val> = suspended.args.iter().map(state_to_val).collect();
        let (used, start) = self.arm(&mut process, Duration::from_millis(suspended.cpu_used_ms));
        let tick = self.tick;
        let before = suspended.cpu_used_ms;
        let budget = move |_: &mut Process| {
            let spent = tick
                .saturating_mul(u32::try_from(used.load(Ordering::Relaxed)).unwrap_or(u32::MAX));
            (
                before.saturating_add(u64::try_from(spent.as_millis()).unwrap_or(u64::MAX)),
                millis_since(start),
            )
        };
        match run_suspendable(
            process,
            &suspended.export,
            &args,
            true,
            &self.control,
            budget,
        ) {
            RunEnd::Returned(mut process, values) => {
                if suspended.export.starts_with("stasis_handle_")
                    && let Some(packed) = values.first().and_then(Val::i64)
                {
                    // The answer of a call whose client left with the pause: freed, not read.
                    let _ = process.read_response(packed, self.max_response, self.cpu_limit);
                }
                let wasi = &mut process.store.data_mut().wasi;
                let (stdout, stderr) = (wasi.take_stdout(), wasi.take_stderr());
                tracing::debug!(
                    export = %suspended.export,
                    stdout = stdout.len(),
                    stderr = stderr.len(),
                    "a call suspended by a pause finished after the resume"
                );
                Ok(process)
            }
            RunEnd::Failed(mut process, error) => {
                let error = process.classify_trap(error, self.cpu_limit);
                tracing::warn!(%error, "a call suspended by a pause failed after the resume");
                Ok(process)
            }
            RunEnd::Released => Err(self.suspended_again()),
        }
    }

    /// Calls handler `name` with `request`, suspendable.
    fn call_handler(
        &mut self,
        mut process: Box<Process>,
        name: &str,
        request: &[u8],
    ) -> Result<Answered, CallOutput> {
        if process.poisoned {
            let pid = process.pid;
            return Ok((process, Err(CallError::Poisoned(pid))));
        }
        if process.kind != crate::state::ProcessKind::Reactor {
            let pid = process.pid;
            return Ok((process, Err(CallError::NotAReactor(pid))));
        }
        let export = format!("stasis_handle_{name}");
        if process
            .instance
            .get_func(&mut process.store, &export)
            .is_none()
        {
            return Ok((process, Err(CallError::MissingExport(export))));
        }
        let (used, start) = self.arm(&mut process, Duration::ZERO);
        let (ptr, len) = match process.write_request(request) {
            Ok(args) => args,
            Err(error) => return Ok((process, Err(error))),
        };
        let tick = self.tick;
        let budget = move |_: &mut Process| {
            let spent = tick
                .saturating_mul(u32::try_from(used.load(Ordering::Relaxed)).unwrap_or(u32::MAX));
            (
                u64::try_from(spent.as_millis()).unwrap_or(u64::MAX),
                millis_since(start),
            )
        };
        let args = [Val::I32(ptr), Val::I32(len)];
        match run_suspendable(process, &export, &args, false, &self.control, budget) {
            RunEnd::Returned(mut process, values) => {
                let result = match values.first().and_then(Val::i64) {
                    Some(packed) => {
                        process.read_response(packed, self.max_response, self.cpu_limit)
                    }
                    None => Err(CallError::BadResponse(format!(
                        "{export} returned {values:?}, not an i64"
                    ))),
                };
                Ok((process, result))
            }
            RunEnd::Failed(mut process, error) => {
                let error = process.classify_trap(error, self.cpu_limit);
                Ok((process, Err(error)))
            }
            RunEnd::Released => Err(self.suspended_again()),
        }
    }

    /// The output of a call whose process was saved by a pause (it finishes after the resume).
    fn suspended_again(&self) -> CallOutput {
        self.control.finish(None);
        CallOutput {
            result: Err(CallError::Suspended),
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    }
}

impl Drop for ProcessCall {
    fn drop(&mut self) {
        if let Some(process) = self.process.take() {
            // Never run: the process goes back to its sandbox as it was.
            self.control.finish(Some(process));
        }
        self.control.done();
    }
}
