//! The manifest of format 2.0 blobs, written before calls could be suspended, and its conversion to the
//! current one. bincode is not self-describing, so an old manifest is read with the structs it was written
//! with: these are them, frozen. A 2.0 blob holds no suspended call, its processes are reactors, and its
//! modules were instrumented without the unwind stage (their unwind globals and frame buffer start fresh).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    GlobalState, MemoryState, ProcessKind, ProcessState, SandboxManifest, TableState, TemplateRef,
};
use crate::wasi::{FdState, PreopenState, WasiState};

/// [`SandboxManifest`] as format 2.0 wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxManifestV2_0 {
    /// The template the sandbox was created from.
    pub template: TemplateRef,
    /// Environment of its processes.
    pub env: Vec<(String, String)>,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
    /// Every live process.
    pub processes: Vec<ProcessStateV2_0>,
    /// Wall-clock time of the pause, in milliseconds since the Unix epoch.
    pub paused_at_unix_ms: u64,
}

/// [`ProcessState`] as format 2.0 wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessStateV2_0 {
    /// The process id.
    pub pid: u32,
    /// The module.
    pub module: TemplateRef,
    /// Mutable globals.
    pub globals: Vec<GlobalState>,
    /// Memory sizes.
    pub memories: Vec<MemoryState>,
    /// Table sizes.
    pub tables: Vec<TableState>,
    /// WASI state.
    pub wasi: WasiStateV2_0,
    /// Whether a trap left it unusable.
    pub poisoned: bool,
    /// The embedder's label.
    pub label: String,
}

/// [`WasiState`] as format 2.0 wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WasiStateV2_0 {
    /// Program arguments.
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Preopens.
    pub preopens: Vec<PreopenState>,
    /// Open fds.
    pub fds: Vec<FdState>,
    /// The virtual monotonic clock.
    pub monotonic_ns: u64,
}

impl From<SandboxManifestV2_0> for SandboxManifest {
    fn from(old: SandboxManifestV2_0) -> Self {
        Self {
            template: old.template,
            env: old.env,
            metadata: old.metadata,
            processes: old.processes.into_iter().map(ProcessState::from).collect(),
            paused_at_unix_ms: old.paused_at_unix_ms,
            kernel: Default::default(),
            network: Default::default(),
        }
    }
}

impl From<ProcessStateV2_0> for ProcessState {
    fn from(old: ProcessStateV2_0) -> Self {
        Self {
            pid: old.pid,
            module: old.module,
            globals: old.globals,
            memories: old.memories,
            tables: old.tables,
            wasi: WasiState {
                args: old.wasi.args,
                env: old.wasi.env,
                preopens: old.wasi.preopens,
                fds: old.wasi.fds,
                monotonic_ns: old.wasi.monotonic_ns,
                pending: None,
            },
            poisoned: old.poisoned,
            label: old.label,
            kind: ProcessKind::Reactor,
            // Unknown: the instrumentation of that time is not this one's, which only matters to a
            // suspended call, and a 2.0 blob has none.
            instrumented_sha256: String::new(),
            suspended: None,
        }
    }
}
