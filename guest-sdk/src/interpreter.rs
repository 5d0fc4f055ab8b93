//! The protocol of code-interpreter guests: what the host sends to a guest's `execute` handler and what it
//! gets back, as JSON. Shared by the guests (Python, JavaScript) and the server, so both sides of the wire
//! are one definition.
//!
//! A code-interpreter guest is a reactor whose interpreter lives in its linear memory: each process is one
//! *context* (one set of variables, functions and imports), so pausing the sandbox keeps them. The guest
//! exports one handler, [`EXECUTE_HANDLER`], taking an [`ExecuteRequest`] and answering an
//! [`ExecuteResponse`]. What the cell prints goes to the process's stdout and stderr (WASI fds 1 and 2),
//! flushed before the handler returns; the host collects it from there.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Name of the handler that runs a cell (exported as `stasis_handle_execute`).
pub const EXECUTE_HANDLER: &str = "execute";

/// One cell to run in the guest's interpreter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecuteRequest {
    /// The source code of the cell.
    pub code: String,
    /// Environment variables visible to the cell only (set before it runs, restored after).
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
}

/// What running a cell produced, besides its output streams.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecuteResponse {
    /// Values the cell displayed; the value of a trailing expression is the one with `is_main_result`.
    #[serde(default)]
    pub results: Vec<ExecutionResult>,
    /// The error the cell raised, if it did not complete.
    #[serde(default)]
    pub error: Option<ExecutionError>,
    /// How many cells this context has run, this one included (Jupyter's execution count).
    pub execution_count: u64,
}

/// One displayed value, as text (the language's own representation: `repr` in Python, the REPL display in
/// JavaScript).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionResult {
    /// The value as text.
    pub text: String,
    /// Whether this is the value of the cell's trailing expression.
    #[serde(default)]
    pub is_main_result: bool,
}

/// An error raised by a cell, in Jupyter's shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionError {
    /// The error's type, e.g. `NameError`, `ZeroDivisionError`, `ReferenceError`.
    pub name: String,
    /// Its message, e.g. `name 'x' is not defined`.
    pub value: String,
    /// The formatted traceback (stack trace), as the language prints it.
    pub traceback: String,
}
