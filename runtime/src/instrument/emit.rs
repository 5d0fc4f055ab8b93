//! Stage 4: the module re-encoded. Every section is copied byte for byte except those the earlier stages
//! extend: the export section (the reserved exports), and with the unwind stage the type, function,
//! memory, global and code sections (its types, helper function, frame buffer, globals and rewritten
//! bodies). The start section is dropped. Copying what is untouched keeps function bodies, custom sections
//! (`name`, `producers`) and anything wasm-encoder might not round-trip exactly, so traps keep their
//! symbolized names; DWARF sections are dropped when code was rewritten, since their offsets no longer
//! match.

use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{
    CodeSection, ConstExpr, ExportKind, ExportSection, FunctionSection, GlobalSection,
    MemorySection, MemoryType, Module, RawSection, SectionId, TypeSection,
};
use wasmparser::{Parser, Payload};

use super::inspect::Inspection;
use super::unwind::ModuleRewrite;
use super::{InstrumentError, START_EXPORT, invalid};

/// Where a section sits in the order the binary format imposes (custom sections excluded).
fn section_rank(id: u8) -> u8 {
    const ORDER: [SectionId; 13] = [
        SectionId::Type,
        SectionId::Import,
        SectionId::Function,
        SectionId::Table,
        SectionId::Memory,
        SectionId::Tag,
        SectionId::Global,
        SectionId::Export,
        SectionId::Start,
        SectionId::Element,
        SectionId::DataCount,
        SectionId::Code,
        SectionId::Data,
    ];
    ORDER
        .iter()
        .position(|s| *s as u8 == id)
        .map_or(u8::MAX, |p| p as u8)
}

/// Sections the output must have even when the input has none, with what goes in them.
#[derive(Default)]
struct Missing {
    memory: bool,
    global: bool,
    export: bool,
}

pub(super) fn emit(
    wasm: &[u8],
    info: &Inspection<'_>,
    rewrite: Option<&ModuleRewrite>,
) -> Result<Vec<u8>, InstrumentError> {
    let mut module = Module::new();
    let mut missing = Missing {
        memory: rewrite.is_some(),
        global: rewrite.is_some(),
        export: true,
    };
    let reencode = |e: wasm_encoder::reencode::Error| invalid(&e);
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| invalid(&e))?;
        match &payload {
            Payload::Version { .. }
            | Payload::CodeSectionEntry(_)
            | Payload::StartSection { .. } => continue,
            Payload::End(_) => break,
            Payload::CustomSection(custom) => {
                if rewrite.is_some() && custom.name().starts_with(".debug_") {
                    continue;
                }
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
        insert_missing(&mut module, &mut missing, section_rank(id), info, rewrite);
        match (payload, rewrite) {
            (Payload::TypeSection(section), Some(rw)) => {
                let mut types = TypeSection::new();
                RoundtripReencoder
                    .parse_type_section(&mut types, section)
                    .map_err(reencode)?;
                for sig in &rw.extra_types {
                    let params = sig
                        .params
                        .iter()
                        .map(|t| RoundtripReencoder.val_type(*t))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(reencode)?;
                    let results = sig
                        .results
                        .iter()
                        .map(|t| RoundtripReencoder.val_type(*t))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(reencode)?;
                    types.ty().function(params, results);
                }
                module.section(&types);
            }
            (Payload::FunctionSection(section), Some(rw)) => {
                let mut functions = FunctionSection::new();
                RoundtripReencoder
                    .parse_function_section(&mut functions, section)
                    .map_err(reencode)?;
                functions.function(rw.reserve_type);
                module.section(&functions);
            }
            (Payload::MemorySection(section), Some(rw)) => {
                let mut memories = MemorySection::new();
                RoundtripReencoder
                    .parse_memory_section(&mut memories, section)
                    .map_err(reencode)?;
                memories.memory(frame_memory(rw));
                missing.memory = false;
                module.section(&memories);
            }
            (Payload::GlobalSection(section), Some(rw)) => {
                let mut globals = GlobalSection::new();
                RoundtripReencoder
                    .parse_global_section(&mut globals, section)
                    .map_err(reencode)?;
                add_globals(&mut globals, rw);
                missing.global = false;
                module.section(&globals);
            }
            (Payload::ExportSection(section), _) => {
                // Re-encoded rather than copied because we append to it.
                let mut exports = ExportSection::new();
                RoundtripReencoder
                    .parse_export_section(&mut exports, section)
                    .map_err(reencode)?;
                add_reserved_exports(&mut exports, info);
                missing.export = false;
                module.section(&exports);
            }
            (Payload::CodeSectionStart { .. }, Some(rw)) => {
                let mut code = CodeSection::new();
                for (body, rewritten) in info.bodies.iter().zip(&rw.bodies) {
                    match rewritten {
                        Some(bytes) => code.raw(bytes),
                        None => code.raw(
                            wasm.get(body.body.range())
                                .ok_or_else(|| invalid(&"function body out of range"))?,
                        ),
                    };
                }
                code.raw(&rw.reserve_body);
                module.section(&code);
            }
            _ => {
                let data = wasm
                    .get(range)
                    .ok_or_else(|| invalid(&"section extends past the end of the module"))?;
                module.section(&RawSection { id, data });
            }
        }
    }
    insert_missing(&mut module, &mut missing, u8::MAX, info, rewrite);
    Ok(module.finish())
}

/// Writes the sections the input lacks that belong before a section of rank `rank`.
fn insert_missing(
    module: &mut Module,
    missing: &mut Missing,
    rank: u8,
    info: &Inspection<'_>,
    rewrite: Option<&ModuleRewrite>,
) {
    if let Some(rw) = rewrite {
        if missing.memory && rank > section_rank(SectionId::Memory as u8) {
            let mut memories = MemorySection::new();
            memories.memory(frame_memory(rw));
            module.section(&memories);
            missing.memory = false;
        }
        if missing.global && rank > section_rank(SectionId::Global as u8) {
            let mut globals = GlobalSection::new();
            add_globals(&mut globals, rw);
            module.section(&globals);
            missing.global = false;
        }
    }
    if missing.export && rank > section_rank(SectionId::Export as u8) {
        let mut exports = ExportSection::new();
        add_reserved_exports(&mut exports, info);
        module.section(&exports);
        missing.export = false;
    }
}

fn frame_memory(rw: &ModuleRewrite) -> MemoryType {
    MemoryType {
        minimum: 0,
        maximum: Some(u64::from(rw.layout.frame_memory_max_pages)),
        memory64: false,
        shared: false,
        page_size_log2: None,
    }
}

fn add_globals(globals: &mut GlobalSection, rw: &ModuleRewrite) {
    for _ in 0..rw.new_globals {
        globals.global(
            wasm_encoder::GlobalType {
                val_type: wasm_encoder::ValType::I32,
                mutable: true,
                shared: false,
            },
            &ConstExpr::i32_const(0),
        );
    }
}

fn add_reserved_exports(exports: &mut ExportSection, info: &Inspection<'_>) {
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
