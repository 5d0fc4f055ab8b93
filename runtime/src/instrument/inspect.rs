//! Stage 1: one validating walk over the module that collects what the later stages need — the state to
//! export, the start function, the active data segments, the signatures, the functions tables can hold and
//! a summary of each function's calls and loops — and refuses what a snapshot could not capture faithfully.

use wasmparser::{
    ConstExpr, DataKind, ElementItems, ElementKind, FuncToValidate, FunctionBody, Operator, Parser,
    Payload, TypeRef, ValType, ValidPayload, Validator, ValidatorResources, WasmFeatures,
};

use super::{
    DataRange, GlobalDesc, GlobalType, InstrumentError, MemoryDesc, RESERVED_PREFIX, TableDesc,
    global_export_name, index_u32, invalid, memory_export_name, table_export_name,
};

/// A function signature.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Sig {
    pub params: Vec<ValType>,
    pub results: Vec<ValType>,
}

/// What a function body does that matters to the call graph and to the unwind stage.
#[derive(Debug, Default)]
pub(super) struct Summary {
    /// Functions it calls directly (`call`).
    pub calls: Vec<u32>,
    /// Type indices of its `call_indirect`s.
    pub indirect: Vec<u32>,
    /// Functions it tail-calls (`return_call`).
    pub tail_calls: Vec<u32>,
    /// Type indices of its `return_call_indirect`s.
    pub tail_indirect: Vec<u32>,
    /// Type indices of its `call_ref`/`return_call_ref`s.
    pub call_refs: Vec<u32>,
    /// Whether it has a loop.
    pub has_loop: bool,
    /// The first instruction in it the unwind stage cannot rewrite around (exception handling, typed
    /// references, stack switching), if any.
    pub unrewritable: Option<&'static str>,
}

/// One defined function.
pub(super) struct Body<'a> {
    /// Index in the function index space.
    pub index: u32,
    /// Its code.
    pub body: FunctionBody<'a>,
    /// Its validator, taken when the body is validated (by the unwind stage, or at the end of the pass).
    pub validator: Option<FuncToValidate<ValidatorResources>>,
    /// What it does.
    pub summary: Summary,
}

/// What the inspect stage learned about a module.
#[derive(Default)]
pub(super) struct Inspection<'a> {
    pub globals: Vec<GlobalDesc>,
    pub memories: Vec<MemoryDesc>,
    pub tables: Vec<TableDesc>,
    pub start: Option<u32>,
    pub data_segments: Vec<DataRange>,
    /// Constant value of every global (imported ones included, as `None`), for evaluating data offsets that
    /// read an immutable global (allowed by the extended-const and GC proposals).
    global_values: Vec<Option<ConstVal>>,
    /// Signature of every type index (`None` for types that are not function types).
    pub types: Vec<Option<Sig>>,
    /// Type index of every function, imports first.
    pub func_types: Vec<u32>,
    /// `(module, name)` of every imported function, in index order.
    pub func_imports: Vec<(String, String)>,
    /// Functions an element segment puts (or may put) into a table: the only possible targets of a
    /// `call_indirect`, since tables cannot be changed at run time.
    pub table_funcs: Vec<u32>,
    /// Every defined function.
    pub bodies: Vec<Body<'a>>,
    /// Whether a memory is shared between threads.
    pub shared_memory: bool,
    /// Whether the type section has types the unwind stage does not handle (GC types).
    pub gc_types: bool,
}

impl Inspection<'_> {
    /// Globals in the index space (all defined: imported globals are refused).
    pub fn global_count(&self) -> u32 {
        self.global_values.len() as u32
    }

    /// Number of imported functions.
    pub fn imported_funcs(&self) -> u32 {
        self.func_imports.len() as u32
    }

    /// Signature of function `index`.
    pub fn func_sig(&self, index: u32) -> Option<&Sig> {
        let ty = *self.func_types.get(index as usize)?;
        self.types.get(ty as usize)?.as_ref()
    }
}

pub(super) fn inspect(wasm: &[u8]) -> Result<Inspection<'_>, InstrumentError> {
    // wasmparser's default features are a superset of what our wasmtime build runs (it lacks the `gc` and
    // `threads` cargo features); a module using the difference passes here and is refused by wasmtime's own
    // validation when it is compiled, with wasmtime's message.
    let mut validator = Validator::new_with_features(WasmFeatures::default());
    let mut info = Inspection::default();
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| invalid(&e))?;
        let validated = validator.payload(&payload).map_err(|e| invalid(&e))?;
        match payload {
            Payload::TypeSection(section) => {
                for group in section {
                    let group = group.map_err(|e| invalid(&e))?;
                    for sub in group.into_types() {
                        match &sub.composite_type.inner {
                            wasmparser::CompositeInnerType::Func(f)
                                if !sub.composite_type.shared =>
                            {
                                info.types.push(Some(Sig {
                                    params: f.params().to_vec(),
                                    results: f.results().to_vec(),
                                }))
                            }
                            _ => {
                                info.gc_types = true;
                                info.types.push(None);
                            }
                        }
                    }
                }
            }
            Payload::ImportSection(section) => {
                for import in section.into_imports() {
                    let import = import.map_err(|e| invalid(&e))?;
                    let names = || (import.module.to_owned(), import.name.to_owned());
                    match import.ty {
                        TypeRef::Func(ty) | TypeRef::FuncExact(ty) => {
                            info.func_types.push(ty);
                            info.func_imports.push(names());
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
            Payload::FunctionSection(section) => {
                for ty in section {
                    info.func_types.push(ty.map_err(|e| invalid(&e))?);
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
                    info.shared_memory |= memory.shared;
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
            Payload::ElementSection(section) => {
                for element in section {
                    let element = element.map_err(|e| invalid(&e))?;
                    // Passive and declared segments can only reach a table through `table.init` or
                    // `table.set`, which are refused; only active segments fill tables.
                    if !matches!(element.kind, ElementKind::Active { .. }) {
                        continue;
                    }
                    match element.items {
                        ElementItems::Functions(funcs) => {
                            for f in funcs {
                                info.table_funcs.push(f.map_err(|e| invalid(&e))?);
                            }
                        }
                        ElementItems::Expressions(_, exprs) => {
                            for expr in exprs {
                                let expr = expr.map_err(|e| invalid(&e))?;
                                let mut ops = expr.get_operators_reader();
                                while !ops.eof() {
                                    if let Operator::RefFunc { function_index } =
                                        ops.read().map_err(|e| invalid(&e))?
                                    {
                                        info.table_funcs.push(function_index);
                                    }
                                }
                            }
                        }
                    }
                }
            }
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
                let index = info
                    .imported_funcs()
                    .saturating_add(index_u32(info.bodies.len())?);
                let summary = summarize(index, &body)?;
                let validator = match validated {
                    ValidPayload::Func(func, _) => Some(func),
                    _ => None,
                };
                info.bodies.push(Body {
                    index,
                    body,
                    validator,
                    summary,
                });
            }
            _ => {}
        }
    }
    info.table_funcs.sort_unstable();
    info.table_funcs.dedup();
    Ok(info)
}

/// Validates every body whose validator is still there (those the unwind stage did not rewrite).
pub(super) fn validate_bodies(info: &mut Inspection<'_>) -> Result<(), InstrumentError> {
    let mut allocations = Default::default();
    for body in &mut info.bodies {
        if let Some(func) = body.validator.take() {
            let mut validator = func.into_validator(allocations);
            validator.validate(&body.body).map_err(|e| invalid(&e))?;
            allocations = validator.into_allocations();
        }
    }
    Ok(())
}

/// Walks a body once: refuses table-mutating instructions, and records its calls, loops and anything the
/// unwind stage cannot rewrite around.
fn summarize(function: u32, body: &FunctionBody<'_>) -> Result<Summary, InstrumentError> {
    let mut summary = Summary::default();
    let mut locals = body.get_locals_reader().map_err(|e| invalid(&e))?;
    for _ in 0..locals.get_count() {
        let (_, ty) = locals.read().map_err(|e| invalid(&e))?;
        if matches!(ty, ValType::Ref(_)) && summary.unrewritable.is_none() {
            summary.unrewritable = Some("a local of reference type");
        }
    }
    let mut ops = body.get_operators_reader().map_err(|e| invalid(&e))?;
    while !ops.eof() {
        let op = ops.read().map_err(|e| invalid(&e))?;
        let table_mutation = match op {
            Operator::TableSet { .. } => Some("table.set"),
            Operator::TableGrow { .. } => Some("table.grow"),
            Operator::TableFill { .. } => Some("table.fill"),
            Operator::TableCopy { .. } => Some("table.copy"),
            Operator::TableInit { .. } => Some("table.init"),
            Operator::ElemDrop { .. } => Some("elem.drop"),
            _ => None,
        };
        if let Some(instruction) = table_mutation {
            return Err(InstrumentError::TableMutation {
                function,
                instruction,
            });
        }
        let unrewritable = match op {
            Operator::Call { function_index } => {
                summary.calls.push(function_index);
                None
            }
            Operator::CallIndirect { type_index, .. } => {
                summary.indirect.push(type_index);
                None
            }
            Operator::ReturnCall { function_index } => {
                summary.tail_calls.push(function_index);
                None
            }
            Operator::ReturnCallIndirect { type_index, .. } => {
                summary.tail_indirect.push(type_index);
                None
            }
            Operator::CallRef { type_index } | Operator::ReturnCallRef { type_index } => {
                summary.call_refs.push(type_index);
                Some("typed function references (`call_ref`)")
            }
            Operator::Loop { .. } => {
                summary.has_loop = true;
                None
            }
            Operator::Try { .. }
            | Operator::TryTable { .. }
            | Operator::Catch { .. }
            | Operator::CatchAll
            | Operator::Delegate { .. }
            | Operator::Throw { .. }
            | Operator::ThrowRef
            | Operator::Rethrow { .. } => Some("exception handling"),
            Operator::BrOnNull { .. }
            | Operator::BrOnNonNull { .. }
            | Operator::BrOnCast { .. }
            | Operator::BrOnCastFail { .. } => Some("branches on references"),
            Operator::ContNew { .. }
            | Operator::ContBind { .. }
            | Operator::Suspend { .. }
            | Operator::Resume { .. }
            | Operator::ResumeThrow { .. }
            | Operator::Switch { .. } => Some("stack switching"),
            _ => None,
        };
        if summary.unrewritable.is_none() {
            summary.unrewritable = unrewritable;
        }
    }
    Ok(summary)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The validator rejects this module, so only the constant evaluator alone can show that an offset it
    /// cannot evaluate is refused rather than guessed.
    #[test]
    fn offset_from_a_mutable_global_is_not_evaluated() {
        let wasm = wat::parse_str(
            r#"(module (global $g (mut i32) (i32.const 4)) (memory 1) (data (global.get $g) "x"))"#,
        )
        .expect("the text parses");
        assert!(matches!(
            inspect(&wasm),
            Err(InstrumentError::Invalid { .. })
        ));
        // A mutable global has no constant value (None), so an offset reading it does not evaluate.
        let expr_wasm =
            wat::parse_str("(module (global (mut i32) (i32.const 4)))").expect("the text parses");
        let info = inspect(&expr_wasm).expect("inspects");
        assert!(matches!(info.global_values[..], [None]));
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

    #[test]
    fn summaries_record_calls_loops_and_table_targets() {
        let wasm = wat::parse_str(
            r#"(module
                 (type $t (func))
                 (import "m" "f" (func $imp))
                 (table 2 funcref)
                 (elem (i32.const 0) func $a)
                 (func $a (loop (call $imp)))
                 (func $b (call_indirect (type $t) (i32.const 0))))"#,
        )
        .expect("the text parses");
        let info = inspect(&wasm).expect("inspects");
        assert_eq!(info.table_funcs, [1]);
        assert_eq!(info.bodies[0].summary.calls, [0]);
        assert!(info.bodies[0].summary.has_loop);
        assert_eq!(info.bodies[1].summary.indirect, [0]);
        assert!(!info.bodies[1].summary.has_loop);
    }
}
