//! The saved state of a sandbox as plain data: what the blob's manifest section holds.
//!
//! Nothing here refers to a live object; [`crate::capture`] builds these structs from live processes and
//! [`crate::restore`] turns them back into live ones. Memory contents are not part of the manifest: they
//! travel in the blob's memory sections, keyed by process index and memory index.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::wasi::WasiState;

/// Everything about a paused sandbox except its memory bytes and its files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxManifest {
    /// The template the sandbox was created from.
    pub template: TemplateRef,
    /// Arguments and environment the sandbox's processes were started with.
    pub env: Vec<(String, String)>,
    /// User metadata attached to the sandbox.
    pub metadata: BTreeMap<String, String>,
    /// Every live process at the time of the pause, in process-id order.
    pub processes: Vec<ProcessState>,
    /// Wall-clock time of the pause, in milliseconds since the Unix epoch.
    pub paused_at_unix_ms: u64,
}

/// A template named by its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRef {
    /// Human name of the template (e.g. `base`).
    pub name: String,
    /// Hex sha256 of the template's original wasm bytes.
    pub module_sha256: String,
}

/// The state of one live process (an instance of a reactor module).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessState {
    /// The process id inside its sandbox.
    pub pid: u32,
    /// The module the process is an instance of.
    pub module: TemplateRef,
    /// Every defined mutable global, in the order instrumentation reported them.
    pub globals: Vec<GlobalState>,
    /// Every defined memory: its size in wasm pages (its bytes are in the blob's memory sections).
    pub memories: Vec<MemoryState>,
    /// Every defined table's size; table contents are fixed by the module since table mutation is refused.
    pub tables: Vec<TableState>,
    /// The process's WASI state: open files, offsets, clocks, args and environment.
    pub wasi: WasiState,
    /// Whether a trap left the process in an unknown state, so it must be restarted before use.
    pub poisoned: bool,
    /// What the embedder called the process when it spawned it (e.g. a code-interpreter context's id);
    /// empty when it gave no label. Kept in the blob so the name survives a move to another server.
    pub label: String,
}

/// The value of one mutable global.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalState {
    /// Index of the global in the module's global index space.
    pub index: u32,
    /// Its value; floats are kept as raw bits so that NaN payloads survive.
    pub value: GlobalValue,
}

/// A global's value as plain data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GlobalValue {
    /// An `i32`.
    I32(i32),
    /// An `i64`.
    I64(i64),
    /// An `f32`, as its bits.
    F32(u32),
    /// An `f64`, as its bits.
    F64(u64),
    /// A `v128`.
    V128(u128),
}

/// The size of one memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryState {
    /// Index of the memory in the module's memory index space.
    pub index: u32,
    /// Size in 64 KiB wasm pages.
    pub pages: u64,
}

/// The size of one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableState {
    /// Index of the table in the module's table index space.
    pub index: u32,
    /// Number of elements.
    pub size: u64,
}
