//! The code interpreter of `code-interpreter-v1` sandboxes: Jupyter-style *contexts* on top of the
//! runtime's processes.
//!
//! A context is one reactor process running an interpreter guest (Python or JavaScript, see
//! `guests/python` and `guests/reactors/javascript`), so its variables, functions and imports live in that
//! process's linear memory and are paused and resumed with the sandbox like everything else. A runaway
//! cell trips the process's CPU deadline and poisons only that process: its context must be restarted,
//! the sandbox's other contexts are untouched. The context's id, language and working directory are the
//! process's label, which the blob keeps, so contexts are found again after a resume on any server.
//!
//! Everything here works on a `&mut Sandbox` under the lifecycle manager's lock; the HTTP side is
//! [`crate::api::jupyter`].

use std::fmt;

use serde::{Deserialize, Serialize};
use stasis::{CallError, Runtime, Sandbox, SpawnError, Template, TemplateError};
use stasis_guest::interpreter::{EXECUTE_HANDLER, ExecuteRequest, ExecuteResponse, ExecutionError};

/// Name of the template whose sandboxes have the code interpreter (the shell plus the interpreters).
pub const CODE_INTERPRETER_TEMPLATE: &str = "code-interpreter-v1";

/// Working directory of a context created without one (E2B's default user's home).
pub const DEFAULT_CWD: &str = "/home/user";

/// A language the interpreter runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Python 3, by RustPython (the default, as in E2B).
    Python,
    /// JavaScript, by boa.
    JavaScript,
}

impl Language {
    /// Every language, in the order they are listed.
    pub const ALL: [Language; 2] = [Language::Python, Language::JavaScript];

    /// The language a request names: `python` when it names none; `js` is JavaScript's short name.
    pub fn parse(name: Option<&str>) -> Result<Self, ContextError> {
        match name.map(|n| n.trim().to_ascii_lowercase()).as_deref() {
            None | Some("" | "python" | "python3" | "py") => Ok(Self::Python),
            Some("javascript" | "js") => Ok(Self::JavaScript),
            Some(other) => Err(ContextError::UnsupportedLanguage(other.to_owned())),
        }
    }

    /// The language's name as the SDKs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Python => "python",
            Self::JavaScript => "javascript",
        }
    }

    /// Id of the language's default context, the one a cell without a context runs in.
    pub fn default_context_id(self) -> String {
        format!("default-{}", self.as_str())
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A context as the SDKs see it: `{"id", "language", "cwd"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextInfo {
    /// The context's id.
    pub id: String,
    /// Its language.
    pub language: Language,
    /// Its working directory.
    pub cwd: String,
}

impl ContextInfo {
    /// The process label that stores this context (JSON, so any id or path round-trips).
    fn label(&self) -> String {
        serde_json::to_string(&Label {
            context: self.clone(),
        })
        .unwrap_or_default()
    }

    /// The context a process label stores, if the label is one of ours.
    fn from_label(label: &str) -> Option<Self> {
        serde_json::from_str::<Label>(label).ok().map(|l| l.context)
    }
}

/// What a context's process label holds.
#[derive(Serialize, Deserialize)]
struct Label {
    context: ContextInfo,
}

/// Why a context operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The request named a language the interpreter does not run.
    #[error("unsupported language {0:?}: this code interpreter runs python and javascript")]
    UnsupportedLanguage(String),
    /// No context has this id in the sandbox.
    #[error("context {0} not found")]
    UnknownContext(String),
    /// A context with this id exists already.
    #[error("context {0} already exists")]
    Exists(String),
    /// The sandbox was not created from the code-interpreter template.
    #[error(
        "sandbox runs template {0}; the code interpreter needs a sandbox of template {CODE_INTERPRETER_TEMPLATE}"
    )]
    NotAnInterpreterSandbox(String),
    /// The interpreter's module could not be loaded.
    #[error("the interpreter could not be loaded")]
    Load(#[from] TemplateError),
    /// The runtime has no interpreter for this language registered.
    #[error("no {0} interpreter is registered")]
    NotRegistered(Language),
    /// The interpreter process could not start (for example, too many processes in the sandbox).
    #[error("the interpreter could not start")]
    Spawn(#[from] SpawnError),
    /// The interpreter failed in a way that is not the cell's fault.
    #[error("the interpreter failed")]
    Call(#[source] CallError),
    /// The interpreter answered something that is not the protocol's response.
    #[error("the interpreter's response is malformed: {0}")]
    BadResponse(String),
}

/// The interpreter guests of a server. They are large (the Python one most), so they are registered
/// with the runtime as *deferred* templates: hashed at start, compiled (or taken from the module cache)
/// when first used — by a cell, a new context, or the resume of a blob whose processes run them.
#[derive(Clone)]
pub struct Interpreters {
    runtime: Runtime,
    python: [u8; 32],
    javascript: [u8; 32],
}

impl Interpreters {
    /// Registers both interpreter guests with `runtime`, deferred.
    pub fn register(runtime: &Runtime) -> Result<Self, TemplateError> {
        Ok(Self {
            runtime: runtime.clone(),
            python: runtime.defer_template_file("python", stasis_guests::PYTHON)?,
            javascript: runtime.defer_template_file("javascript", stasis_guests::JAVASCRIPT)?,
        })
    }

    /// The sha256 of each interpreter's module, with the name it is registered under in the runtime.
    pub fn hashes(&self) -> [(&'static str, [u8; 32]); 2] {
        [("python", self.python), ("javascript", self.javascript)]
    }

    /// The sha256 of the module that runs `language`.
    pub fn sha256(&self, language: Language) -> [u8; 32] {
        match language {
            Language::Python => self.python,
            Language::JavaScript => self.javascript,
        }
    }

    /// The guest that runs `language`, loaded now if it was not yet.
    pub fn template(&self, language: Language) -> Result<Template, ContextError> {
        let sha256 = match language {
            Language::Python => &self.python,
            Language::JavaScript => &self.javascript,
        };
        self.runtime
            .load_deferred(sha256)?
            .ok_or(ContextError::NotRegistered(language))
    }

    /// Loads every interpreter now, so the first cell does not wait for a compilation, then makes the
    /// pre-initialised image of every program that has one (see `stasis::RuntimeConfig::preinit_programs`),
    /// so the first `python3` a shell starts is as quick as the next; logs how long each took. A server
    /// calls this on a thread of its own at start.
    pub fn warm_up(&self) {
        for language in Language::ALL {
            let started = std::time::Instant::now();
            match self.template(language) {
                Ok(_) => tracing::info!(
                    %language,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "interpreter ready"
                ),
                Err(error) => {
                    tracing::error!(%language, error = %crate::error::chain(&error), "interpreter failed to load")
                }
            }
        }
        for program in self.runtime.programs() {
            let started = std::time::Instant::now();
            if self.runtime.prepare_program(&program) {
                tracing::info!(
                    %program,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "program image ready"
                );
            }
        }
    }
}

/// Refuses sandboxes that are not of the code-interpreter template: a `base` sandbox is a shell only.
pub fn require_interpreter(template: &str) -> Result<(), ContextError> {
    if template == CODE_INTERPRETER_TEMPLATE {
        Ok(())
    } else {
        Err(ContextError::NotAnInterpreterSandbox(template.to_owned()))
    }
}

/// The sandbox's contexts, in creation order.
pub fn list(sandbox: &mut Sandbox) -> Vec<ContextInfo> {
    sandbox
        .processes()
        .iter()
        .filter_map(|p| ContextInfo::from_label(&p.label))
        .collect()
}

/// The pid of context `id`, and the context.
fn find(sandbox: &mut Sandbox, id: &str) -> Option<(u32, ContextInfo)> {
    sandbox.processes().into_iter().find_map(|p| {
        ContextInfo::from_label(&p.label)
            .filter(|c| c.id == id)
            .map(|c| (p.pid, c))
    })
}

/// Starts a new context of `language` in `cwd` (or [`DEFAULT_CWD`]) with a fresh random id.
pub fn create(
    sandbox: &mut Sandbox,
    interpreters: &Interpreters,
    language: Language,
    cwd: Option<&str>,
) -> Result<ContextInfo, ContextError> {
    let context = ContextInfo {
        id: new_context_id(),
        language,
        cwd: cwd
            .filter(|c| !c.trim().is_empty())
            .unwrap_or(DEFAULT_CWD)
            .to_owned(),
    };
    start(sandbox, interpreters, context)
}

/// Spawns the process of `context`.
fn start(
    sandbox: &mut Sandbox,
    interpreters: &Interpreters,
    context: ContextInfo,
) -> Result<ContextInfo, ContextError> {
    if find(sandbox, &context.id).is_some() {
        return Err(ContextError::Exists(context.id));
    }
    let template = interpreters.template(context.language)?;
    sandbox.spawn_labeled(&template, &context.label())?;
    Ok(context)
}

/// Ends context `id`.
pub fn remove(sandbox: &mut Sandbox, id: &str) -> Result<(), ContextError> {
    let (pid, _) = find(sandbox, id).ok_or_else(|| ContextError::UnknownContext(id.to_owned()))?;
    sandbox.kill_process(pid);
    Ok(())
}

/// Restarts context `id` with a fresh interpreter: same id, language and directory, no variables. The way
/// out for a context a runaway cell left poisoned.
pub fn restart(
    sandbox: &mut Sandbox,
    interpreters: &Interpreters,
    id: &str,
) -> Result<ContextInfo, ContextError> {
    let (pid, context) =
        find(sandbox, id).ok_or_else(|| ContextError::UnknownContext(id.to_owned()))?;
    sandbox.kill_process(pid);
    start(sandbox, interpreters, context)
}

/// Where a cell runs: a named context, or the default context of a language (created on first use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The context with this id.
    Context(String),
    /// The default context of this language.
    Default(Language),
}

/// What running one cell gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellOutcome {
    /// What the cell wrote to stdout.
    pub stdout: String,
    /// What it wrote to stderr.
    pub stderr: String,
    /// The interpreter's answer; for a cell stopped by the host it carries only the error, and no
    /// execution count.
    pub response: ExecuteResponse,
    /// Whether the interpreter reported an execution count (one stopped by the host did not).
    pub counted: bool,
}

/// What starting a cell gave.
pub enum Started {
    /// The cell's call, to run outside the sandbox's lock ([`stasis::ProcessCall::run`]), then to read
    /// with [`finish_execute`].
    Call {
        /// The call.
        call: stasis::ProcessCall,
        /// The context it runs in.
        context: ContextInfo,
    },
    /// The context is running another cell (one a resume brought back, say): wait for it, then start
    /// again — cells of a context run one after the other, as in a Jupyter kernel.
    Busy(stasis::Control),
    /// The cell cannot run; this is its outcome (a context left unusable by an earlier cell).
    Done(CellOutcome),
}

/// The context `target` names (a language's default context is created on first use).
fn context_of(
    sandbox: &mut Sandbox,
    interpreters: &Interpreters,
    target: &Target,
) -> Result<(u32, ContextInfo), ContextError> {
    match target {
        Target::Context(id) => {
            find(sandbox, id).ok_or_else(|| ContextError::UnknownContext(id.clone()))
        }
        Target::Default(language) => {
            let id = language.default_context_id();
            match find(sandbox, &id) {
                Some(found) => Ok(found),
                None => {
                    let context = ContextInfo {
                        id: id.clone(),
                        language: *language,
                        cwd: DEFAULT_CWD.to_owned(),
                    };
                    start(sandbox, interpreters, context)?;
                    find(sandbox, &id).ok_or(ContextError::UnknownContext(id))
                }
            }
        }
    }
}

/// Starts `request` in `target`, under the sandbox's lock; the cell itself runs without it, so that the
/// sandbox can be paused while it runs (which suspends the cell: it finishes after the resume).
pub fn start_execute(
    sandbox: &mut Sandbox,
    interpreters: &Interpreters,
    target: &Target,
    request: &ExecuteRequest,
) -> Result<Started, ContextError> {
    let (pid, context) = context_of(sandbox, interpreters, target)?;
    let body = serde_json::to_vec(request).map_err(|e| ContextError::BadResponse(e.to_string()))?;
    match sandbox.start_call(pid, EXECUTE_HANDLER, &body) {
        Ok(call) => Ok(Started::Call { call, context }),
        Err(CallError::Busy(pid)) => match sandbox.running(pid) {
            Some(control) => Ok(Started::Busy(control)),
            // It finished between the two calls: it can run now.
            None => sandbox
                .start_call(pid, EXECUTE_HANDLER, &body)
                .map(|call| Started::Call { call, context })
                .map_err(ContextError::Call),
        },
        Err(CallError::Poisoned(_)) => Ok(Started::Done(poisoned(&context))),
        Err(other) => Err(ContextError::Call(other)),
    }
}

/// The outcome of a cell that was asked to run in a context stopped by an earlier one.
fn poisoned(context: &ContextInfo) -> CellOutcome {
    stopped(
        String::new(),
        String::new(),
        "ContextRestartRequired",
        format!(
            "context {} was stopped by an earlier cell (a timeout or a crash of the interpreter); \
             restart it (POST /contexts/{}/restart)",
            context.id, context.id
        ),
    )
}

/// A cell stopped by the host: only an error, and no execution count.
fn stopped(stdout: String, stderr: String, name: &str, value: String) -> CellOutcome {
    CellOutcome {
        stdout,
        stderr,
        response: ExecuteResponse {
            results: Vec::new(),
            error: Some(ExecutionError {
                name: name.to_owned(),
                value,
                traceback: String::new(),
            }),
            execution_count: 0,
        },
        counted: false,
    }
}

/// The outcome of a cell whose call ran and gave `output`. The cell's own errors (an exception, a syntax
/// error, a cell that ran past the CPU limit, a pause that came while it ran) are part of the outcome, as
/// Jupyter reports them; only failures of the machinery are `Err`.
pub fn finish_execute(
    context: &ContextInfo,
    output: stasis::CallOutput,
) -> Result<CellOutcome, ContextError> {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    match output.result {
        Ok(bytes) => {
            let response: ExecuteResponse = serde_json::from_slice(&bytes)
                .map_err(|e| ContextError::BadResponse(e.to_string()))?;
            Ok(CellOutcome {
                stdout,
                stderr,
                response,
                counted: true,
            })
        }
        Err(CallError::Timeout(limit)) => Ok(stopped(
            stdout,
            stderr,
            "TimeoutError",
            format!(
                "the cell ran past the CPU time limit of {limit:?} and was stopped; context {} must be \
                 restarted (POST /contexts/{}/restart) before it can run again",
                context.id, context.id
            ),
        )),
        Err(CallError::Poisoned(_)) => Ok(poisoned(context)),
        Err(CallError::Suspended) => Ok(stopped(
            stdout,
            stderr,
            "SandboxPaused",
            format!(
                "the sandbox was paused while this cell ran in context {}: the cell was saved with it \
                 and finishes after the sandbox resumes, with its full effect on the context's \
                 variables; its output is not delivered",
                context.id
            ),
        )),
        Err(CallError::Trap(trap)) => Ok(stopped(
            stdout,
            stderr,
            "InterpreterCrashed",
            format!(
                "the interpreter of context {} crashed ({}); restart it (POST /contexts/{}/restart)",
                context.id,
                crate::error::chain(trap.as_ref()),
                context.id
            ),
        )),
        Err(other) => Err(ContextError::Call(other)),
    }
}

/// Runs `request` in `target` to the end on this thread (the sandbox stays borrowed meanwhile, so nothing
/// can pause it): [`start_execute`], the call, [`finish_execute`]. A context busy with another cell is
/// waited for.
pub fn execute(
    sandbox: &mut Sandbox,
    interpreters: &Interpreters,
    target: &Target,
    request: &ExecuteRequest,
) -> Result<CellOutcome, ContextError> {
    loop {
        match start_execute(sandbox, interpreters, target, request)? {
            Started::Call { call, context } => return finish_execute(&context, call.run()),
            Started::Busy(control) => control.wait(),
            Started::Done(outcome) => return Ok(outcome),
        }
    }
}

/// A new context id: 128 random bits in hex, like the ids of Jupyter kernels.
fn new_context_id() -> String {
    let mut bytes = [0u8; 16];
    // Without the OS's randomness there is nothing safe to fall back on; ids then stay unique by time.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes = nanos.to_le_bytes();
    }
    hex::encode(bytes)
}
