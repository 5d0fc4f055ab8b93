//! Stasis: a WebAssembly sandbox runtime whose sandboxes pause to a blob and resume exactly where they were.
//!
//! A [`Runtime`] loads guest modules (`wasm32-wasip1`) as [`Template`]s and creates [`Sandbox`]es from them.
//! Each sandbox has a private directory, which its guests see as `/`, and a table of live processes. A
//! paused sandbox is one self-contained, versioned, checksummed file — every process's memory, all its
//! globals (also non-exported ones such as `__stack_pointer`), its open files, offsets and clocks, and the
//! sandbox's files — that [`Runtime::resume`] turns back into a live sandbox, in this process or another,
//! on this machine or another.
//!
//! The pipeline, one module per stage: [`instrument`] (make all state reachable) → [`engine`] (compile once,
//! cache on disk) → [`instantiate`] → [`capture`] → [`snapshot`] (encode; decode) → [`restore`].
//!
//! ```no_run
//! use stasis::{Runtime, RuntimeConfig, SandboxOptions, ResumeOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::new(RuntimeConfig::new("./stasis-data"))?;
//! let template = runtime.load_template_file("stateful", "stateful.wasm")?;
//! let mut sandbox = runtime.create_sandbox(&template, SandboxOptions::default())?;
//! sandbox.call("bump", b"")?;                       // counter = 1, kept in guest memory
//! sandbox.pause("sandbox.blob".as_ref())?;          // processes released, state on disk
//!
//! let mut resumed = runtime.resume("sandbox.blob".as_ref(), ResumeOptions::default())?;
//! assert_eq!(resumed.call("bump", b"")?, b"2 2");   // it carries on where it was
//! # Ok(()) }
//! ```

pub mod call;
pub mod capture;
pub mod command;
pub mod engine;
pub mod files_only;
pub mod instantiate;
pub mod instrument;
pub mod kernel;
pub mod lifecycle;
pub mod limits;
pub mod net;
pub mod process;
pub mod restore;
pub mod running;
pub mod runtime;
pub mod sandbox;
pub mod snapshot;
pub mod state;
pub mod template;
pub mod usage;
pub mod wasi;

pub use call::{CallOutput, ProcessCall};
pub use capture::{PauseError, PauseReport};
pub use command::{Command, CommandControl, CommandIo};
pub use instantiate::SpawnError;
pub use kernel::ChildInfo;
pub use limits::SandboxLimits;
pub use net::{ConnectError, EgressPolicy, HostStream, Network};
pub use process::CallError;
pub use restore::{ResumeError, ResumeOptions};
pub use running::Control;
pub use runtime::{Runtime, RuntimeConfig, RuntimeError};
pub use sandbox::{
    CommandOutput, CreateError, ProcessInfo, ProcessStatus, RunError, Sandbox, SandboxOptions,
};
pub use state::ProcessKind;
pub use template::{ModuleKind, Template, TemplateError};
pub use usage::SandboxUsage;
