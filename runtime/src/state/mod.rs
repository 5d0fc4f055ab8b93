//! The saved state of a sandbox as plain data: what the blob's manifest section holds.
//!
//! Nothing here refers to a live object; [`crate::capture`] builds these structs from live processes and
//! [`crate::restore`] turns them back into live ones. Memory contents are not part of the manifest: they
//! travel in the blob's memory sections, keyed by process index and memory index — and so do suspended
//! calls' stacks, which the unwind stage keeps in a memory of its own; what a suspended call needs besides
//! is here ([`SuspendedCall`]).
//!
//! This is the manifest of format 2.3; [`v2_0`], [`v2_1`] and [`v2_2`] read the manifests of older blobs.

pub mod v2_0;
pub mod v2_1;
pub mod v2_2;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::snapshot::{DecodeError, DecodeLimits, DecodedBlob, decode, peek_header, read_blob};
use crate::wasi::WasiState;

/// Reads the sandbox blob at `path`, whatever minor of the format wrote it (see [`read_blob`]).
pub fn read_sandbox_blob(
    path: &Path,
    limits: &DecodeLimits,
) -> Result<DecodedBlob<SandboxManifest>, DecodeError> {
    let mut header = [0u8; crate::snapshot::format::HEADER_LEN];
    let got = {
        let mut file = std::fs::File::open(path).map_err(DecodeError::Io)?;
        let mut got = 0;
        while got < header.len() {
            match file.read(&mut header[got..]).map_err(DecodeError::Io)? {
                0 => break,
                n => got += n,
            }
        }
        got
    };
    match peek_header(&header[..got])?.format_minor {
        0 => Ok(read_blob::<v2_0::SandboxManifestV2_0>(path, limits)?.map_manifest(Into::into)),
        1 => Ok(read_blob::<v2_1::SandboxManifestV2_1>(path, limits)?.map_manifest(Into::into)),
        2 => Ok(read_blob::<v2_2::SandboxManifestV2_2>(path, limits)?.map_manifest(Into::into)),
        _ => read_blob(path, limits),
    }
}

/// Decodes a sandbox blob held in memory, whatever minor of the format wrote it (see [`decode`]).
pub fn decode_sandbox_blob(
    bytes: Vec<u8>,
    limits: &DecodeLimits,
) -> Result<DecodedBlob<SandboxManifest>, DecodeError> {
    match peek_header(&bytes)?.format_minor {
        0 => Ok(decode::<v2_0::SandboxManifestV2_0>(bytes, limits)?.map_manifest(Into::into)),
        1 => Ok(decode::<v2_1::SandboxManifestV2_1>(bytes, limits)?.map_manifest(Into::into)),
        2 => Ok(decode::<v2_2::SandboxManifestV2_2>(bytes, limits)?.map_manifest(Into::into)),
        _ => decode(bytes, limits),
    }
}

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
    /// The kernel: which processes started which, and the pipes between them.
    pub kernel: KernelState,
    /// The network: the ports the guests listen on and the egress policy (format 2.3).
    pub network: crate::net::NetworkState,
}

/// A sandbox's kernel as saved: its table of children and the bytes buffered in its pipes. The children
/// that were running are processes of the manifest too (suspended in a call); the fds that hold a pipe's
/// ends name it by [`PipeSaved::id`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelState {
    /// Every child in the table, in pid order.
    pub children: Vec<ChildSaved>,
    /// Every pipe some saved fd holds an end of.
    pub pipes: Vec<PipeSaved>,
}

/// A child process as the kernel's table keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildSaved {
    /// Its pid.
    pub pid: u32,
    /// Its parent's pid (0: an orphan).
    pub ppid: u32,
    /// The program it runs.
    pub program: String,
    /// Its argv.
    pub args: Vec<String>,
    /// Its working directory.
    pub cwd: Option<String>,
    /// Its exit status, when it has ended and its parent has not reaped it yet.
    pub exited: Option<i32>,
}

/// A pipe as saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipeSaved {
    /// What the fds holding its ends call it, within this blob.
    pub id: u64,
    /// The bytes written and not read yet.
    pub bytes: Vec<u8>,
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
    /// Whether it is a reactor or a command.
    pub kind: ProcessKind,
    /// Hex sha256 of the instrumented module it ran: a suspended call's frames only mean something to the
    /// same instrumentation.
    pub instrumented_sha256: String,
    /// The call it was suspended in, if it was running one when the pause came.
    pub suspended: Option<SuspendedCall>,
}

/// How a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProcessKind {
    /// A reactor: instantiated once, called many times.
    Reactor,
    /// A command: `_start` runs once, to the end.
    Command,
}

/// A call that unwound when its sandbox was paused, to be rewound and finished after the resume. Its
/// frames are in the process's frame-buffer memory and its position in the unwind stage's globals; the host
/// call it was waiting in is in its WASI state ([`crate::wasi::WasiState::pending`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspendedCall {
    /// The export that was called: `_start` for a command, a handler's export for a reactor.
    pub export: String,
    /// Its arguments, to call it again with for the rewind.
    pub args: Vec<GlobalValue>,
    /// CPU time it had used, in milliseconds (its limit counts on from there).
    pub cpu_used_ms: u64,
    /// Wall time it had taken, in milliseconds (a command's wall-time limit counts on from there).
    pub wall_used_ms: u64,
    /// A command's stdin pipe as it was: the bytes it had not read yet and whether it was closed.
    pub stdin: Option<PipeState>,
}

/// A stdin pipe as saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipeState {
    /// Bytes written and not read yet.
    pub unread: Vec<u8>,
    /// Whether it was closed (the reader gets end-of-file after the unread bytes).
    pub closed: bool,
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
