//! Re-encodes a guest module so that every piece of state a pause must capture is reachable from the host —
//! its globals, memories and tables, and, with the unwind stage, its call stack.
//!
//! wasmtime only lets an embedder read and write *exported* globals, memories and tables, and it cannot
//! hand out a running call stack at all. Like wizer, we rewrite the module before compiling it:
//!
//! - every defined mutable global, every defined memory and every defined table is exported again under a
//!   reserved name (`__stasis_global_<i>`, `__stasis_memory_<i>`, `__stasis_table_<i>`, `<i>` being the
//!   index in its index space), and the start section is removed and its function exported as
//!   `__stasis_start`, so that it runs on a fresh instance only and never again on top of a restored one;
//! - the **unwind stage** (Binaryen's Asyncify approach, written over wasmparser/wasm-encoder) rewrites
//!   every function that can reach an *unwind point* — a call to a blocking import or a loop header — so
//!   that a running call can *unwind*: each frame stores its position, its locals and the operand-stack
//!   values live at that point into a frame buffer (a memory of its own, exported like the others, so a
//!   blob carries it) and returns; and later *rewind* on a fresh instance: each frame reloads itself and
//!   jumps straight back to where it was. See [`unwind`] for the protocol the host follows.
//!
//! The pipeline, one file per stage:
//!
//! 1. [`inspect`]: one validating walk over the module collects what will be exported, the start function,
//!    the active data segments and a summary of every function's calls and loops, and refuses what a
//!    snapshot could not capture faithfully (imported memories, globals or tables; table-mutating
//!    instructions; mutable globals of reference type; reserved names; non-constant data offsets).
//! 2. [`callgraph`]: which functions can reach an unwind point, directly or through calls (`call_indirect`
//!    narrowed by signature to the functions that tables can hold, since tables are immutable).
//! 3. [`unwind`]: the rewrite of each such function.
//! 4. [`emit`]: the module re-encoded — untouched sections and function bodies copied byte for byte, the
//!    export section extended, the start section dropped, the unwind stage's globals, frame memory, helper
//!    function and rewritten bodies added.
//!
//! What cannot be made resumable (exception handling, tail calls or typed function references on a path to
//! an unwind point, reference-typed locals there, shared memories) makes the module [`Pausability::NotMidCall`]
//! with the reason: it is then instrumented without the unwind stage, and a pause waits for its calls to
//! finish or ends its commands, as for any module before this stage existed.
//!
//! The pass is a pure function of its input and options: no I/O, deterministic output, and malformed input
//! yields an error, never a panic.

mod callgraph;
pub use callgraph::is_unwind_import;
mod emit;
mod inspect;
mod liveness;
#[cfg(feature = "oracle")]
pub mod oracle;
pub mod unwind;

use serde::{Deserialize, Serialize};
use wasmparser::Parser;

/// Prefix of every export name this pass adds; a module may not use it itself.
pub const RESERVED_PREFIX: &str = "__stasis_";

/// Export name of the removed start function.
pub const START_EXPORT: &str = "__stasis_start";

/// Export name under which the global with index `index` (in the global index space) is exported.
pub fn global_export_name(index: u32) -> String {
    format!("{RESERVED_PREFIX}global_{index}")
}

/// Export name under which the memory with index `index` (in the memory index space) is exported.
pub fn memory_export_name(index: u32) -> String {
    format!("{RESERVED_PREFIX}memory_{index}")
}

/// Export name under which the table with index `index` (in the table index space) is exported.
pub fn table_export_name(index: u32) -> String {
    format!("{RESERVED_PREFIX}table_{index}")
}

/// What the pass does besides exporting state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InstrumentOptions {
    /// Run the unwind stage, so that calls in flight can be paused.
    pub unwind: bool,
    /// Make every loop header an unwind point, so that a CPU-bound loop can be paused too (otherwise only
    /// blocking imports are).
    pub loop_checks: bool,
    /// Add a countdown global that requests an unwind at the N-th unwind point the guest passes (loop headers
    /// in wasm, blocking imports in the host): what deterministic tests and fuzzing pause with.
    pub countdown: bool,
    /// Largest size of the frame buffer, in 64 KiB pages: a deeper stack cannot be unwound (the unwind traps,
    /// and the host reports the stack as too deep to save).
    pub frame_buffer_max_pages: u32,
}

impl Default for InstrumentOptions {
    fn default() -> Self {
        Self {
            unwind: true,
            loop_checks: true,
            countdown: false,
            frame_buffer_max_pages: 1024,
        }
    }
}

impl InstrumentOptions {
    /// Only the export stage: no call can be paused mid-way.
    pub fn exports_only() -> Self {
        Self {
            unwind: false,
            ..Self::default()
        }
    }
}

/// Most pages the frame buffer may be given: its size in bytes must fit the 32-bit arithmetic of the
/// rewritten code (pages << 16).
pub const MAX_FRAME_BUFFER_PAGES: u32 = 16384;

/// The result of [`instrument`]: the rewritten module and a description of the state it exposes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instrumented {
    /// The re-encoded module, with the reserved exports added and the start section removed.
    pub wasm: Vec<u8>,
    /// Every defined mutable global, in index order (the unwind stage's own globals last).
    pub globals: Vec<GlobalDesc>,
    /// Every defined memory, in index order (the unwind stage's frame buffer last).
    pub memories: Vec<MemoryDesc>,
    /// Every defined table, in index order.
    pub tables: Vec<TableDesc>,
    /// The export name of the removed start function ([`START_EXPORT`]), if the module had one. Call it on
    /// fresh instances only: on a restored instance its effects are already in the captured state.
    pub start_export: Option<String>,
    /// Active data segments with constant offsets, in section order. Instantiation writes them into memory;
    /// a restore must zero these ranges wherever the saved memory holds no data, or stale initial data would
    /// reappear in pages the snapshot left out because they were all zero.
    pub data_segments: Vec<DataRange>,
    /// Whether a call in flight can be paused, and why not if it cannot.
    pub pausable: Pausability,
    /// What the unwind stage added, when it ran and found something to rewrite.
    pub unwind: Option<UnwindLayout>,
}

/// Whether calls of a module can be paused while they run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pausability {
    /// Calls in flight unwind at their next unwind point; a pause keeps them.
    MidCall,
    /// The module has no unwind point at all (no loop, no blocking import): its calls finish on their own
    /// quickly, so a pause simply waits for them.
    NothingToUnwind,
    /// The unwind stage was not run (its options say so) or refused the module; a pause cannot keep a call
    /// in flight.
    NotMidCall {
        /// Why, for people: "function 12 uses `try_table` around an unwind point", …
        reason: String,
    },
}

impl Pausability {
    /// Whether a call in flight can be suspended.
    pub fn mid_call(&self) -> bool {
        matches!(self, Self::MidCall)
    }
}

impl std::fmt::Display for Pausability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MidCall => f.write_str("pausable mid-call: yes"),
            Self::NothingToUnwind => f.write_str("pausable mid-call: yes (it has no unwind point)"),
            Self::NotMidCall { reason } => write!(f, "pausable mid-call: no, because {reason}"),
        }
    }
}

/// Where the unwind stage's state lives in an instrumented module: indices in the global and memory index
/// spaces (all of them also among [`Instrumented::globals`] and [`Instrumented::memories`], so captures save
/// them like any other), and how much was rewritten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnwindLayout {
    /// The `i32` state global: [`unwind::NORMAL`], [`unwind::UNWINDING`], [`unwind::REWINDING`] or
    /// [`unwind::REQUESTED`].
    pub state_global: u32,
    /// The `i32` global holding the top of the frame buffer (bytes used).
    pub sp_global: u32,
    /// The `i32` countdown global of [`InstrumentOptions::countdown`].
    pub countdown_global: Option<u32>,
    /// The frame buffer's memory.
    pub frame_memory: u32,
    /// Its largest size, in pages.
    pub frame_memory_max_pages: u32,
    /// How many functions were rewritten.
    pub rewritten_functions: u32,
    /// How many unwind points (call sites and loop headers) they have.
    pub unwind_points: u32,
    /// Imports whose calls are unwind points, as `(function index, name)`.
    pub unwind_imports: Vec<(u32, String)>,
}

/// The value type of a captured global. Reference types are refused, so only numeric and vector types remain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GlobalType {
    /// A 32-bit integer.
    I32,
    /// A 64-bit integer.
    I64,
    /// A 32-bit float.
    F32,
    /// A 64-bit float.
    F64,
    /// A 128-bit vector.
    V128,
}

/// A defined mutable global made reachable by an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalDesc {
    /// Index in the module's global index space.
    pub index: u32,
    /// The global's value type.
    pub ty: GlobalType,
    /// The reserved export name under which it is reachable.
    pub export_name: String,
}

/// A defined memory made reachable by an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryDesc {
    /// Index in the module's memory index space.
    pub index: u32,
    /// The reserved export name under which it is reachable.
    pub export_name: String,
    /// Size at instantiation, in pages.
    pub initial_pages: u64,
    /// Declared maximum size, in pages.
    pub maximum_pages: Option<u64>,
    /// Whether the memory is indexed with 64-bit addresses.
    pub memory64: bool,
    /// Whether the memory is shared between threads.
    pub shared: bool,
    /// Page size in bytes (65536 unless the custom-page-sizes proposal is used).
    pub page_size: u64,
}

/// A defined table made reachable by an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDesc {
    /// Index in the module's table index space.
    pub index: u32,
    /// The reserved export name under which it is reachable.
    pub export_name: String,
    /// Size at instantiation, in elements.
    pub initial: u64,
    /// Declared maximum size, in elements.
    pub maximum: Option<u64>,
}

/// A byte range of a memory written by an active data segment at instantiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataRange {
    /// Index of the memory the segment initializes.
    pub memory: u32,
    /// Byte offset of the segment in that memory.
    pub offset: u64,
    /// Length of the segment in bytes.
    pub len: u64,
}

/// Why a module cannot be instrumented.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstrumentError {
    /// The input is a component, and only core modules are supported.
    #[error(
        "the input is a WebAssembly component; only core modules (such as wasm32-wasip1 programs) are supported"
    )]
    Component,
    /// The input is not a valid core module.
    #[error("invalid WebAssembly module: {message}")]
    Invalid {
        /// The validator's explanation, including the byte offset.
        message: String,
    },
    /// The module imports a memory, whose contents the importing instance does not own.
    #[error(
        "the module imports memory `{module}`.`{field}`; imported memories cannot be captured by a snapshot"
    )]
    ImportedMemory {
        /// Module name of the import.
        module: String,
        /// Field name of the import.
        field: String,
    },
    /// The module imports a global, whose value the importing instance does not own.
    #[error(
        "the module imports global `{module}`.`{field}`; imported globals cannot be captured by a snapshot"
    )]
    ImportedGlobal {
        /// Module name of the import.
        module: String,
        /// Field name of the import.
        field: String,
    },
    /// The module imports a table, whose contents the importing instance does not own.
    #[error(
        "the module imports table `{module}`.`{field}`; imported tables cannot be captured by a snapshot"
    )]
    ImportedTable {
        /// Module name of the import.
        module: String,
        /// Field name of the import.
        field: String,
    },
    /// A function mutates a table at run time. Tables are exported but their contents are not yet saved, so
    /// such a module would resume with the tables of a fresh instance.
    #[error(
        "function {function} uses `{instruction}`; table-mutating instructions are not supported because table contents are not captured by snapshots"
    )]
    TableMutation {
        /// Index of the function in the function index space.
        function: u32,
        /// The offending instruction, in text format.
        instruction: &'static str,
    },
    /// The module already exports a name starting with [`RESERVED_PREFIX`].
    #[error(
        "the module exports `{name}`, but export names starting with `{RESERVED_PREFIX}` are reserved for Stasis"
    )]
    ReservedExportName {
        /// The offending export name.
        name: String,
    },
    /// A mutable global holds a reference, which has no meaning outside the instance that created it.
    #[error(
        "global {index} is a mutable global of reference type `{ty}`; references cannot be captured by a snapshot"
    )]
    ReferenceGlobal {
        /// Index of the global in the global index space.
        index: u32,
        /// The global's type, in text format.
        ty: String,
    },
    /// An active data segment's offset is not a constant this pass can evaluate, so the range a restore must
    /// clear is unknown. Valid modules cannot reach this today (imported globals are refused, and every other
    /// integer constant expression is evaluated); it guards against future proposals widening constant
    /// expressions, where guessing an offset would silently corrupt restored memory.
    #[error(
        "active data segment {segment} has an offset that is not a constant expression Stasis can evaluate"
    )]
    NonConstantDataOffset {
        /// Index of the data segment.
        segment: u32,
    },
    /// The frame buffer's size is out of range.
    #[error("the frame buffer may have 1 to {MAX_FRAME_BUFFER_PAGES} pages, not {0}")]
    FrameBufferSize(u32),
}

/// Instruments `wasm` with the default options (the unwind stage included); see the module documentation.
pub fn instrument(wasm: &[u8]) -> Result<Instrumented, InstrumentError> {
    instrument_with(wasm, &InstrumentOptions::default())
}

/// Stack of the thread the pass runs on. The unwind stage recurses once per nested block that holds an
/// unwind point ([`unwind::MAX_NESTING`] at most), and interpreters nest hundreds of blocks (a `switch`
/// lowered to `br_table`): more than a default thread stack holds in a debug build. Only what is touched
/// is ever committed.
const PASS_STACK: usize = 256 << 20;

/// Instruments `wasm` for snapshotting with `options`.
pub fn instrument_with(
    wasm: &[u8],
    options: &InstrumentOptions,
) -> Result<Instrumented, InstrumentError> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("stasis-instrument".into())
            .stack_size(PASS_STACK)
            .spawn_scoped(scope, || run_pass(wasm, options))
            .map_err(|e| invalid(&format!("cannot start the instrumentation thread: {e}")))?
            .join()
            .unwrap_or_else(|_| Err(invalid(&"the instrumentation pass panicked")))
    })
}

fn run_pass(wasm: &[u8], options: &InstrumentOptions) -> Result<Instrumented, InstrumentError> {
    if Parser::is_component(wasm) {
        return Err(InstrumentError::Component);
    }
    if options.unwind
        && (options.frame_buffer_max_pages == 0
            || options.frame_buffer_max_pages > MAX_FRAME_BUFFER_PAGES)
    {
        return Err(InstrumentError::FrameBufferSize(
            options.frame_buffer_max_pages,
        ));
    }
    let mut inspection = inspect::inspect(wasm)?;
    let plan = if options.unwind {
        callgraph::plan(&inspection, options)
    } else {
        Err("the unwind stage was not asked for".to_owned())
    };
    let (pausable, rewrite) = match plan {
        Ok(plan) if plan.is_empty() => (Pausability::NothingToUnwind, None),
        Ok(plan) => match unwind::rewrite_module(&mut inspection, &plan, options) {
            Ok(rewrite) => (Pausability::MidCall, Some(rewrite)),
            Err(unwind::Refusal::Unsupported(reason)) => {
                // The attempt used up some of the validators; start again without the unwind stage.
                inspection = inspect::inspect(wasm)?;
                (Pausability::NotMidCall { reason }, None)
            }
            Err(unwind::Refusal::Invalid(message)) => {
                return Err(InstrumentError::Invalid { message });
            }
        },
        Err(reason) => (Pausability::NotMidCall { reason }, None),
    };
    if rewrite.is_none() {
        inspect::validate_bodies(&mut inspection)?;
    }
    let out = emit::emit(wasm, &inspection, rewrite.as_ref())?;
    Ok(Instrumented {
        wasm: out,
        globals: inspection.globals,
        memories: inspection.memories,
        tables: inspection.tables,
        start_export: inspection.start.map(|_| START_EXPORT.to_owned()),
        data_segments: inspection.data_segments,
        pausable,
        unwind: rewrite.map(|r| r.layout),
    })
}

fn invalid(e: &impl std::fmt::Display) -> InstrumentError {
    InstrumentError::Invalid {
        message: e.to_string(),
    }
}

fn index_u32(i: usize) -> Result<u32, InstrumentError> {
    u32::try_from(i).map_err(|e| invalid(&e))
}
