//! Re-encodes a guest module so that every piece of state a pause must capture is reachable from the host.
//!
//! wasmtime only lets an embedder read and write *exported* globals, memories and tables. Like wizer, we
//! rewrite the module before compiling it: every defined mutable global, every defined memory and every
//! defined table is exported again under a reserved name (`__stasis_global_<i>`, `__stasis_memory_<i>`,
//! `__stasis_table_<i>`, `<i>` being the index in its index space), and the start section is removed and its
//! function exported as `__stasis_start`, so that it runs on a fresh instance only and never again on top of a
//! restored one.
//!
//! The pass works in two stages over a validated module:
//!
//! 1. **inspect**: one walk over the payloads collects what will be exported, the start function and the
//!    active data segments, and refuses what a snapshot could not capture faithfully (imported memories,
//!    globals or tables; table-mutating instructions; mutable globals of reference type; names that already
//!    use the reserved prefix; data segments whose offset is not a constant).
//! 2. **emit**: every section is copied byte for byte except the export section, which is re-encoded with
//!    `wasm_encoder::reencode` and extended, and the start section, which is dropped. Copying untouched
//!    sections verbatim keeps function bodies, custom sections (`name`, `producers`, DWARF) and anything
//!    wasm-encoder might not round-trip exactly, so traps keep their symbolized names.
//!
//! The pass is a pure function of its input: no I/O, and malformed input yields an error, never a panic.

use serde::{Deserialize, Serialize};
use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasmparser::{
    ConstExpr, DataKind, FunctionBody, Operator, Parser, Payload, TypeRef, ValType, Validator,
    WasmFeatures,
};

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

/// The result of [`instrument`]: the rewritten module and a description of the state it exposes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instrumented {
    /// The re-encoded module, with the reserved exports added and the start section removed.
    pub wasm: Vec<u8>,
    /// Every defined mutable global, in index order.
    pub globals: Vec<GlobalDesc>,
    /// Every defined memory, in index order.
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
}

/// Instruments `wasm` for snapshotting; see the module documentation for what changes and what is refused.
pub fn instrument(wasm: &[u8]) -> Result<Instrumented, InstrumentError> {
    if Parser::is_component(wasm) {
        return Err(InstrumentError::Component);
    }
    // Validate first, so later stages can rely on indices being in range and sections being in order.
    // wasmparser's default features are a superset of what our wasmtime build runs (it lacks the `gc` and
    // `threads` cargo features); a module using the difference passes here and is refused by wasmtime's own
    // validation when it is compiled, with wasmtime's message.
    Validator::new_with_features(WasmFeatures::default())
        .validate_all(wasm)
        .map_err(|e| invalid(&e))?;
    let inspection = inspect(wasm)?;
    let out = emit(wasm, &inspection)?;
    Ok(Instrumented {
        wasm: out,
        globals: inspection.globals,
        memories: inspection.memories,
        tables: inspection.tables,
        start_export: inspection.start.map(|_| START_EXPORT.to_owned()),
        data_segments: inspection.data_segments,
    })
}

fn invalid(e: &impl std::fmt::Display) -> InstrumentError {
    InstrumentError::Invalid {
        message: e.to_string(),
    }
}

/// What the inspect stage learned about a module.
#[derive(Default)]
struct Inspection {
    globals: Vec<GlobalDesc>,
    memories: Vec<MemoryDesc>,
    tables: Vec<TableDesc>,
    start: Option<u32>,
    data_segments: Vec<DataRange>,
    /// Constant value of every global (imported ones included, as `None`), for evaluating data offsets that
    /// read an immutable global (allowed by the extended-const and GC proposals).
    global_values: Vec<Option<ConstVal>>,
}

fn inspect(wasm: &[u8]) -> Result<Inspection, InstrumentError> {
    let mut info = Inspection::default();
    let mut imported_funcs: u32 = 0;
    let mut defined_funcs: u32 = 0;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(|e| invalid(&e))? {
            Payload::ImportSection(section) => {
                for import in section.into_imports() {
                    let import = import.map_err(|e| invalid(&e))?;
                    let names = || (import.module.to_owned(), import.name.to_owned());
                    match import.ty {
                        TypeRef::Func(_) | TypeRef::FuncExact(_) => {
                            imported_funcs = imported_funcs.saturating_add(1)
                        }
                        TypeRef::Tag(_) => {}
                        TypeRef::Memory(_) => {
                            let (module, field) = names();
                            return Err(InstrumentError::ImportedMemory { module, field });
                        }
                        TypeRef::Global(_) => {
                            let (module, field) = names();
                            return Err(InstrumentError::ImportedGlobal { module, field });
                        }
                        TypeRef::Table(_) => {
                            let (module, field) = names();
                            return Err(InstrumentError::ImportedTable { module, field });
                        }
                    }
                }
            }
            Payload::TableSection(section) => {
                for table in section {
                    let table = table.map_err(|e| invalid(&e))?;
                    let index = index_u32(info.tables.len())?;
                    info.tables.push(TableDesc {
                        index,
                        export_name: table_export_name(index),
                        initial: table.ty.initial,
                        maximum: table.ty.maximum,
                    });
                }
            }
            Payload::MemorySection(section) => {
                for memory in section {
                    let memory = memory.map_err(|e| invalid(&e))?;
                    let index = index_u32(info.memories.len())?;
                    let page_size_log2 = memory.page_size_log2.unwrap_or(16);
                    info.memories.push(MemoryDesc {
                        index,
                        export_name: memory_export_name(index),
                        initial_pages: memory.initial,
                        maximum_pages: memory.maximum,
                        memory64: memory.memory64,
                        shared: memory.shared,
                        page_size: 1u64
                            .checked_shl(page_size_log2)
                            .ok_or_else(|| invalid(&"page size too large"))?,
                    });
                }
            }
            Payload::GlobalSection(section) => {
                for global in section {
                    let global = global.map_err(|e| invalid(&e))?;
                    let index = index_u32(info.global_values.len())?;
                    let value = if global.ty.mutable {
                        None
                    } else {
                        eval_const(&global.init_expr, &info.global_values)
                    };
                    info.global_values.push(value);
                    if !global.ty.mutable {
                        continue;
                    }
                    let ty = match global.ty.content_type {
                        ValType::I32 => GlobalType::I32,
                        ValType::I64 => GlobalType::I64,
                        ValType::F32 => GlobalType::F32,
                        ValType::F64 => GlobalType::F64,
                        ValType::V128 => GlobalType::V128,
                        ValType::Ref(r) => {
                            return Err(InstrumentError::ReferenceGlobal {
                                index,
                                ty: r.to_string(),
                            });
                        }
                    };
                    info.globals.push(GlobalDesc {
                        index,
                        ty,
                        export_name: global_export_name(index),
                    });
                }
            }
            Payload::ExportSection(section) => {
                for export in section {
                    let export = export.map_err(|e| invalid(&e))?;
                    if export.name.starts_with(RESERVED_PREFIX) {
                        return Err(InstrumentError::ReservedExportName {
                            name: export.name.to_owned(),
                        });
                    }
                }
            }
            Payload::StartSection { func, .. } => info.start = Some(func),
            Payload::DataSection(section) => {
                for (segment, data) in section.into_iter().enumerate() {
                    let data = data.map_err(|e| invalid(&e))?;
                    let DataKind::Active {
                        memory_index,
                        offset_expr,
                    } = data.kind
                    else {
                        continue;
                    };
                    let segment = index_u32(segment)?;
                    let offset = match eval_const(&offset_expr, &info.global_values) {
                        Some(ConstVal::I32(v)) => u64::from(v as u32),
                        Some(ConstVal::I64(v)) => v as u64,
                        None => return Err(InstrumentError::NonConstantDataOffset { segment }),
                    };
                    let len = u64::try_from(data.data.len()).map_err(|e| invalid(&e))?;
                    info.data_segments.push(DataRange {
                        memory: memory_index,
                        offset,
                        len,
                    });
                }
            }
            Payload::CodeSectionEntry(body) => {
                let function = imported_funcs.saturating_add(defined_funcs);
                defined_funcs = defined_funcs.saturating_add(1);
                check_body(function, &body)?;
            }
            _ => {}
        }
    }
    Ok(info)
}

fn index_u32(i: usize) -> Result<u32, InstrumentError> {
    u32::try_from(i).map_err(|e| invalid(&e))
}

/// Refuses a function body that contains a table-mutating instruction.
fn check_body(function: u32, body: &FunctionBody<'_>) -> Result<(), InstrumentError> {
    let mut ops = body.get_operators_reader().map_err(|e| invalid(&e))?;
    while !ops.eof() {
        let instruction = match ops.read().map_err(|e| invalid(&e))? {
            Operator::TableSet { .. } => "table.set",
            Operator::TableGrow { .. } => "table.grow",
            Operator::TableFill { .. } => "table.fill",
            Operator::TableCopy { .. } => "table.copy",
            Operator::TableInit { .. } => "table.init",
            Operator::ElemDrop { .. } => "elem.drop",
            _ => continue,
        };
        return Err(InstrumentError::TableMutation {
            function,
            instruction,
        });
    }
    Ok(())
}

/// A value a constant expression evaluated to.
#[derive(Debug, Clone, Copy)]
enum ConstVal {
    I32(i32),
    I64(i64),
}

/// Evaluates an integer constant expression (`*.const`, `global.get` of a known immutable global, and the
/// extended-const arithmetic), with wasm's wrapping semantics. `None` for anything else.
fn eval_const(expr: &ConstExpr<'_>, globals: &[Option<ConstVal>]) -> Option<ConstVal> {
    let mut stack: Vec<ConstVal> = Vec::new();
    let mut ops = expr.get_operators_reader();
    while !ops.eof() {
        let op = ops.read().ok()?;
        let value = match op {
            Operator::I32Const { value } => ConstVal::I32(value),
            Operator::I64Const { value } => ConstVal::I64(value),
            Operator::GlobalGet { global_index } => {
                (*globals.get(usize::try_from(global_index).ok()?)?)?
            }
            Operator::I32Add | Operator::I32Sub | Operator::I32Mul => {
                let (ConstVal::I32(b), ConstVal::I32(a)) = (stack.pop()?, stack.pop()?) else {
                    return None;
                };
                ConstVal::I32(match op {
                    Operator::I32Add => a.wrapping_add(b),
                    Operator::I32Sub => a.wrapping_sub(b),
                    _ => a.wrapping_mul(b),
                })
            }
            Operator::I64Add | Operator::I64Sub | Operator::I64Mul => {
                let (ConstVal::I64(b), ConstVal::I64(a)) = (stack.pop()?, stack.pop()?) else {
                    return None;
                };
                ConstVal::I64(match op {
                    Operator::I64Add => a.wrapping_add(b),
                    Operator::I64Sub => a.wrapping_sub(b),
                    _ => a.wrapping_mul(b),
                })
            }
            Operator::End => break,
            _ => return None,
        };
        stack.push(value);
    }
    match stack.as_slice() {
        [value] => Some(*value),
        _ => None,
    }
}

/// Where a section sits in the order the binary format imposes (custom sections excluded).
fn section_rank(id: u8) -> u8 {
    use wasm_encoder::SectionId as S;
    const ORDER: [S; 13] = [
        S::Type,
        S::Import,
        S::Function,
        S::Table,
        S::Memory,
        S::Tag,
        S::Global,
        S::Export,
        S::Start,
        S::Element,
        S::DataCount,
        S::Code,
        S::Data,
    ];
    ORDER
        .iter()
        .position(|s| *s as u8 == id)
        .map_or(u8::MAX, |p| p as u8)
}

fn emit(wasm: &[u8], info: &Inspection) -> Result<Vec<u8>, InstrumentError> {
    let export_rank = section_rank(wasm_encoder::SectionId::Export as u8);
    let mut module = wasm_encoder::Module::new();
    let mut exports = wasm_encoder::ExportSection::new();
    let mut exports_written = false;
    let write_exports = |module: &mut wasm_encoder::Module,
                         exports: &mut wasm_encoder::ExportSection| {
        add_reserved_exports(exports, info);
        module.section(&*exports);
    };
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| invalid(&e))?;
        match &payload {
            Payload::Version { .. }
            | Payload::CodeSectionEntry(_)
            | Payload::StartSection { .. } => continue,
            Payload::End(_) => break,
            Payload::CustomSection(custom) => {
                module.section(&wasm_encoder::CustomSection {
                    name: custom.name().into(),
                    data: custom.data().into(),
                });
                continue;
            }
            _ => {}
        }
        let Some((id, range)) = payload.as_section() else {
            return Err(invalid(&"unexpected payload in a core module"));
        };
        if !exports_written && section_rank(id) > export_rank {
            // The module has no export section: insert ours where it belongs.
            write_exports(&mut module, &mut exports);
            exports_written = true;
        }
        if let Payload::ExportSection(section) = payload {
            // Re-encoded rather than copied because we append to it.
            RoundtripReencoder
                .parse_export_section(&mut exports, section)
                .map_err(|e| invalid(&e))?;
            write_exports(&mut module, &mut exports);
            exports_written = true;
            continue;
        }
        let data = wasm
            .get(range)
            .ok_or_else(|| invalid(&"section extends past the end of the module"))?;
        module.section(&wasm_encoder::RawSection { id, data });
    }
    if !exports_written {
        write_exports(&mut module, &mut exports);
    }
    Ok(module.finish())
}

fn add_reserved_exports(exports: &mut wasm_encoder::ExportSection, info: &Inspection) {
    use wasm_encoder::ExportKind;
    for g in &info.globals {
        exports.export(&g.export_name, ExportKind::Global, g.index);
    }
    for m in &info.memories {
        exports.export(&m.export_name, ExportKind::Memory, m.index);
    }
    for t in &info.tables {
        exports.export(&t.export_name, ExportKind::Table, t.index);
    }
    if let Some(start) = info.start {
        exports.export(START_EXPORT, ExportKind::Func, start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The validator rejects this module, so only the inspect stage alone can show that an offset it cannot
    /// evaluate is refused rather than guessed.
    #[test]
    fn inspect_refuses_offset_it_cannot_evaluate() {
        let wasm = wat::parse_str(
            r#"(module (global $g (mut i32) (i32.const 4)) (memory 1) (data (global.get $g) "x"))"#,
        )
        .expect("the text parses");
        assert!(matches!(
            inspect(&wasm),
            Err(InstrumentError::NonConstantDataOffset { segment: 0 })
        ));
    }

    #[test]
    fn eval_const_wraps_like_wasm() {
        let wasm = wat::parse_str(
            "(module (global i32 (i32.add (i32.const 0x7fffffff) (i32.const 1))) (global i64 (i64.mul (i64.const -1) (i64.const 5))))",
        )
        .expect("the text parses");
        let info = inspect(&wasm).expect("inspects");
        assert!(matches!(
            info.global_values[..],
            [Some(ConstVal::I32(i32::MIN)), Some(ConstVal::I64(-5))]
        ));
    }
}
