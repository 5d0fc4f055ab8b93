//! The JavaScript code-interpreter guest: a reactor whose [boa](https://boajs.dev) context lives in its linear
//! memory, so the variables, functions and classes a cell defines are there for the next cell and survive
//! a pause of the sandbox.
//!
//! It speaks the `code-interpreter-v1` protocol of [`stasis_guest::interpreter`]: one handler, `execute`,
//! taking an [`ExecuteRequest`] and answering an [`ExecuteResponse`], both JSON. Semantics, chosen to match
//! a JavaScript REPL (Deno's Jupyter kernel, which E2B's JavaScript interpreter runs):
//!
//! - each cell is a *script* evaluated in one long-lived context: `var`, `let`, `const`, functions and
//!   classes declared at top level stay defined. Declaring a top-level `let`, `const` or `class` a second
//!   time in a later cell is a `SyntaxError`, as it is across the `<script>` tags of one page;
//! - the completion value of the cell is its main result unless it is `undefined`, shown as boa's REPL
//!   display (`display()`): strings in double quotes (`"text"`, as Deno shows them), objects and arrays
//!   pretty-printed, `[Function f]`, `Map { 1 → 2 }` and so on;
//! - after the cell the promise job queue is run to completion (microtasks), so `.then` callbacks run and
//!   their `console.log` output is part of the cell's output. A cell whose value is a Promise has the
//!   promise's settled value as its result, or its rejection as its error; a Promise still pending once the
//!   queue is empty is shown as such. Top-level `await` is not available: boa parses cells as scripts,
//!   where `await` is only allowed inside `async` functions (chain `.then`, or end the cell with the
//!   promise itself);
//! - a thrown error is reported with its `name` and `message` properties (so subclasses of `Error` keep
//!   their own name) and a traceback made of `name: message` and boa's stack trace (`at f (<cell 3>:1:7)`);
//!   a thrown non-object (`throw "x"`) is reported as `Error` with the value as message;
//! - `console.log`, `info` and `debug` write to stdout, `console.warn` and `error` to stderr (as Node does),
//!   both flushed before the handler returns;
//! - `process.env` holds the process's environment (the sandbox's env vars) plus the request's `env_vars`,
//!   which are set for the cell only and restored afterwards.
//!
//! No timers (`setTimeout`), no `fetch`, no `Intl` and no `Temporal`: they would need an event loop or
//! large data tables, and the guest has no network anyway.
//!
//! The same module is also `node`, the command-line program: it exports the `main` handler of the program
//! convention (`stasis_guest::program`, implemented in [`program`]). A process is one or the other.

use std::cell::RefCell;
use std::io::Write as _;
use std::path::Path;

use boa_engine::builtins::promise::PromiseState;
use boa_engine::object::ObjectInitializer;
use boa_engine::property::{Attribute, PropertyKey};
use boa_engine::{
    Context, Finalize, JsError, JsObject, JsResult, JsString, JsValue, Source, Trace, js_string,
};
use boa_runtime::console::{Console, ConsoleState, Logger};
use stasis_guest::interpreter::{ExecuteRequest, ExecuteResponse, ExecutionError, ExecutionResult};

mod program;

thread_local! {
    /// The one interpreter of this process, created by the first cell. A reactor runs on one thread, so a
    /// thread-local is simply a static that need not be `Sync` (boa's values are not).
    static INTERPRETER: RefCell<Option<Interpreter>> = const { RefCell::new(None) };
}

/// Whether this process has become a code-interpreter context (it has run a cell), so it must not run a
/// program.
fn has_context() -> bool {
    INTERPRETER.with_borrow(Option::is_some)
}

/// Runs one cell: the `execute` handler of the `code-interpreter-v1` protocol.
fn execute(request: &[u8]) -> Result<Vec<u8>, String> {
    let request: ExecuteRequest =
        serde_json::from_slice(request).map_err(|e| format!("invalid execute request: {e}"))?;
    if program::started() {
        return Err("this process runs a program; cells need a process of its own".into());
    }
    let response = INTERPRETER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let interpreter = match slot.as_mut() {
            Some(interpreter) => interpreter,
            None => slot.insert(Interpreter::new()?),
        };
        Ok::<_, String>(interpreter.run(&request))
    })?;
    // The host reads the streams as soon as the handler returns: nothing may stay in a buffer.
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    serde_json::to_vec(&response).map_err(|e| format!("encoding the execute response: {e}"))
}

stasis_guest::export_handler!(execute);
stasis_guest::export_main!(program::main);

/// A boa context and what the protocol keeps beside it.
struct Interpreter {
    context: Context,
    /// The `process.env` object, where each request's `env_vars` are set for one cell.
    env: JsObject,
    /// Cells run so far, this one included once it started.
    execution_count: u64,
}

impl Interpreter {
    /// Builds the context: the standard library, `console` and `process.env`.
    fn new() -> Result<Self, String> {
        let mut context = Context::default();
        Console::register_with_logger(StdioLogger, &mut context)
            .map_err(|e| format!("registering console: {e}"))?;
        let env = ObjectInitializer::new(&mut context).build();
        for (key, value) in std::env::vars() {
            env.set(
                JsString::from(key.as_str()),
                JsString::from(value.as_str()),
                false,
                &mut context,
            )
            .map_err(|e| format!("filling process.env: {e}"))?;
        }
        let process = ObjectInitializer::new(&mut context)
            .property(js_string!("env"), env.clone(), Attribute::all())
            .build();
        context
            .register_global_property(
                js_string!("process"),
                process,
                Attribute::WRITABLE | Attribute::CONFIGURABLE,
            )
            .map_err(|e| format!("registering process: {e}"))?;
        Ok(Self {
            context,
            env,
            execution_count: 0,
        })
    }

    /// Runs one cell with its env vars set, and restores them afterwards.
    fn run(&mut self, request: &ExecuteRequest) -> ExecuteResponse {
        self.execution_count += 1;
        let saved = self.set_env(request);
        let outcome = self.evaluate(&request.code);
        self.restore_env(saved);
        let mut response = ExecuteResponse {
            execution_count: self.execution_count,
            ..ExecuteResponse::default()
        };
        match outcome {
            Ok(Some(text)) => response.results.push(ExecutionResult {
                text,
                is_main_result: true,
            }),
            Ok(None) => {}
            Err(error) => response.error = Some(self.describe(&error)),
        }
        response
    }

    /// Evaluates `code` as a script, runs the job queue, and settles a Promise completion value; returns the
    /// text of the main result, `None` for `undefined`.
    fn evaluate(&mut self, code: &str) -> JsResult<Option<String>> {
        let path = format!("<cell {}>", self.execution_count);
        let source = Source::from_bytes(code).with_path(Path::new(&path));
        let evaluated = self.context.eval(source);
        // Microtasks queued by the cell run even when it threw afterwards, as in any event loop.
        let jobs = self.context.run_jobs();
        let value = evaluated?;
        jobs?;
        let value = match value.as_promise().map(|p| p.state()) {
            Some(PromiseState::Fulfilled(settled)) => settled,
            Some(PromiseState::Rejected(reason)) => return Err(JsError::from_opaque(reason)),
            Some(PromiseState::Pending) | None => value,
        };
        Ok((!value.is_undefined()).then(|| value.display().to_string()))
    }

    /// Sets the request's env vars on `process.env`, returning what each key held before.
    fn set_env(&mut self, request: &ExecuteRequest) -> Vec<(JsString, Option<JsValue>)> {
        let mut saved = Vec::with_capacity(request.env_vars.len());
        for (key, value) in &request.env_vars {
            let key = JsString::from(key.as_str());
            let before = match self.env.has_own_property(key.clone(), &mut self.context) {
                Ok(true) => self.env.get(key.clone(), &mut self.context).ok(),
                _ => None,
            };
            // `process.env` is an ordinary object: setting a property cannot throw.
            let _ = self.env.set(
                key.clone(),
                JsString::from(value.as_str()),
                false,
                &mut self.context,
            );
            saved.push((key, before));
        }
        saved
    }

    /// Puts `process.env` back as it was before [`Interpreter::set_env`].
    fn restore_env(&mut self, saved: Vec<(JsString, Option<JsValue>)>) {
        for (key, before) in saved.into_iter().rev() {
            let _ = match before {
                Some(value) => self.env.set(key, value, false, &mut self.context),
                None => self
                    .env
                    .delete_property_or_throw(PropertyKey::from(key), &mut self.context),
            };
        }
    }

    /// The protocol's view of a thrown error: its `name`, its `message` and a traceback.
    fn describe(&mut self, error: &JsError) -> ExecutionError {
        // boa's display of an error is `name: message` followed by its backtrace, when it has one.
        let traceback = error.to_string();
        let thrown = match error.clone().into_opaque(&mut self.context) {
            Ok(thrown) => thrown,
            // An engine error (a runtime limit, an internal panic) has no JavaScript value.
            Err(engine) => {
                let text = engine.to_string();
                let (name, value) = text.split_once(": ").unwrap_or(("Error", text.as_str()));
                return ExecutionError {
                    name: name.to_owned(),
                    value: value.to_owned(),
                    traceback,
                };
            }
        };
        let Some(object) = thrown.as_object() else {
            let value = match thrown.as_string() {
                Some(text) => text.to_std_string_escaped(),
                None => thrown.display().to_string(),
            };
            return ExecutionError {
                name: "Error".to_owned(),
                traceback: format!("Uncaught {}", thrown.display()),
                value,
            };
        };
        let name = self
            .string_property(&object, js_string!("name"))
            .unwrap_or_else(|| "Error".to_owned());
        let value = self
            .string_property(&object, js_string!("message"))
            .unwrap_or_default();
        ExecutionError {
            name,
            value,
            traceback,
        }
    }

    /// `object[key]` converted to a string, unless reading or converting it throws or it is `undefined`.
    fn string_property(&mut self, object: &JsObject, key: JsString) -> Option<String> {
        let value = object.get(key, &mut self.context).ok()?;
        if value.is_undefined() {
            return None;
        }
        Some(
            value
                .to_string(&mut self.context)
                .ok()?
                .to_std_string_escaped(),
        )
    }
}

/// `console` writing to the process's own stdout and stderr, as Node splits them: `log`, `info` and `debug`
/// to stdout, `warn` and `error` to stderr, indented by two spaces per open `console.group`.
#[derive(Debug, Trace, Finalize)]
pub(crate) struct StdioLogger;

impl StdioLogger {
    fn write(mut out: impl std::io::Write, msg: &str, state: &ConsoleState) -> JsResult<()> {
        let indent = " ".repeat(state.indent());
        for line in msg.split('\n') {
            writeln!(out, "{indent}{line}").map_err(JsError::from_rust)?;
        }
        Ok(())
    }
}

impl Logger for StdioLogger {
    fn log(&self, msg: String, state: &ConsoleState, _: &mut Context) -> JsResult<()> {
        Self::write(std::io::stdout().lock(), &msg, state)
    }

    fn info(&self, msg: String, state: &ConsoleState, _: &mut Context) -> JsResult<()> {
        Self::write(std::io::stdout().lock(), &msg, state)
    }

    fn warn(&self, msg: String, state: &ConsoleState, _: &mut Context) -> JsResult<()> {
        Self::write(std::io::stderr().lock(), &msg, state)
    }

    fn error(&self, msg: String, state: &ConsoleState, _: &mut Context) -> JsResult<()> {
        Self::write(std::io::stderr().lock(), &msg, state)
    }
}
