//! Stage 3: the unwind/rewind rewrite — a running call stack made into data.
//!
//! # The protocol
//!
//! The rewritten module has an `i32` *state* global, an `i32` *stack pointer* global and a memory of its
//! own, the *frame buffer* (all exported like every other global and memory, so a capture saves them):
//!
//! - [`NORMAL`]: code runs as written.
//! - [`REQUESTED`]: the host wants the guest to unwind (it sets this from the epoch callback, or the
//!   countdown does); the next loop header that sees it starts unwinding.
//! - [`UNWINDING`]: set by a loop header, or by the host inside an unwind-point import that decides to
//!   suspend (the import then returns a dummy result). After every call to a function that can unwind, the
//!   caller checks for it; if set, the caller appends its frame — function index, resume point, every local
//!   and every operand-stack value live there — to the frame buffer and returns a dummy result, and so on up
//!   to the export the host called, which returns to the host. The host then captures the instance as it
//!   captures any other: the frames are memory, the position is globals.
//! - [`REWINDING`]: set by the host on the instance (fresh, restored from a blob, or the same one) before it
//!   calls the same export again with the same arguments. Each rewritten function's prologue pops its frame,
//!   reloads its locals and jumps to the call it was in, which it makes again; the innermost one is the
//!   unwind-point import, which, seeing [`REWINDING`], sets [`NORMAL`] and does what it was asked the first
//!   time (sleeping only what is left of a sleep, say); or a loop header, which sets [`NORMAL`] and carries on.
//!
//! # The rewrite of a function
//!
//! Control flow in wasm is structured, so "jumping back" is done with dispatch blocks: every frame (the body,
//! and every block, loop or `if` arm that contains an unwind point) is split at its unwind-point items into
//! straight segments, and wrapped in one block per item, so that a `br_if` chain at the frame's head can land
//! right before any of them. Values on the operand stack at a boundary live in *slot* locals (one per stack
//! height and type), so segments start and end with an empty stack and a frame can be re-entered at any
//! boundary; a rewritten construct takes no parameters (they arrive in slots) and an `if` reads its condition
//! from its slot, so the rewind takes the same arm. Cranelift keeps locals in registers or stack slots as it
//! likes, so the slots cost next to nothing: what the normal path pays is one global check after each call
//! that can unwind, one at the head of each loop and of each frame with an unwind point, and the function
//! prologue's check.
//!
//! Loop parameters (which no compiler emits, but the format allows) are kept in slots too: a branch back
//! to such a loop stores its operands there first; a `br_table` to one is refused.

use std::collections::HashMap;

use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{BlockType, Function, Instruction, MemArg};
use wasmparser::{
    BlockType as WpBlockType, FuncValidator, FunctionBody, Operator, ValType, ValidatorResources,
};

use super::callgraph::{Plan, is_unwind_import};
use super::inspect::{Inspection, Sig};
use super::{
    GlobalDesc, GlobalType, InstrumentOptions, MemoryDesc, UnwindLayout, global_export_name,
    memory_export_name,
};

/// State: running as written.
pub const NORMAL: i32 = 0;
/// State: frames are being saved on the way out.
pub const UNWINDING: i32 = 1;
/// State: frames are being reloaded on the way in.
pub const REWINDING: i32 = 2;
/// State: the host asks the guest to unwind at its next loop header.
pub const REQUESTED: i32 = 3;

/// Deepest nesting of blocks holding unwind points the stage rewrites; deeper makes the module not
/// pausable mid-call (the rewrite recurses once per level).
pub const MAX_NESTING: usize = 4096;

/// Bytes of a saved frame before its locals: the function index and the resume point, both `u32`.
pub const FRAME_HEADER: u32 = 8;

/// Why the unwind stage did not rewrite a module.
#[derive(Debug)]
pub(super) enum Refusal {
    /// Something it cannot make resumable; the module is instrumented without the unwind stage.
    Unsupported(String),
    /// The module is invalid (a function failed validation).
    Invalid(String),
}

/// What the unwind stage adds to a module.
pub(super) struct ModuleRewrite {
    /// The layout the host needs.
    pub layout: UnwindLayout,
    /// The rewritten body of each defined function, by position; `None` where it is copied as it is.
    pub bodies: Vec<Option<Vec<u8>>>,
    /// Function types to append to the type section.
    pub extra_types: Vec<Sig>,
    /// Type index of the frame-buffer helper function appended to the module.
    pub reserve_type: u32,
    /// Its body.
    pub reserve_body: Vec<u8>,
    /// Globals to append (all mutable `i32`s starting at 0), in index order.
    pub new_globals: u32,
}

/// Rewrites every function of `plan`, validating every body of the module on the way, and records the
/// globals and the memory it adds in `info`.
pub(super) fn rewrite_module(
    info: &mut Inspection<'_>,
    plan: &Plan,
    options: &InstrumentOptions,
) -> Result<ModuleRewrite, Refusal> {
    let state_global = info.global_count();
    let sp_global = state_global + 1;
    let countdown_global = options.countdown.then_some(state_global + 2);
    let frame_memory = info.memories.len() as u32;
    let reserve_func = info.imported_funcs() + info.bodies.len() as u32;
    let mut types = TypeInterner::new(&info.types);
    let reserve_type = types.intern(Sig {
        params: vec![ValType::I32],
        results: Vec::new(),
    });
    let env = Env {
        plan,
        imported: info.imported_funcs(),
        tables_hold_imports: info.table_funcs.iter().any(|&f| f < info.imported_funcs()),
        state: state_global,
        sp: sp_global,
        countdown: countdown_global,
        memory: frame_memory,
        reserve: reserve_func,
    };
    let mut bodies = Vec::with_capacity(info.bodies.len());
    let mut rewritten = 0u32;
    let mut points = 0u32;
    for body in &mut info.bodies {
        let Some(func) = body.validator.take() else {
            return Err(Refusal::Invalid(format!(
                "function {} has no validator",
                body.index
            )));
        };
        let validator = func.into_validator(Default::default());
        if plan.can_unwind.get(body.index as usize).copied() == Some(true) {
            let sig = info
                .types
                .get(info.func_types[body.index as usize] as usize)
                .and_then(|s| s.clone())
                .ok_or_else(|| Refusal::Invalid(format!("function {} has no type", body.index)))?;
            match rewrite_function(body.index, &sig, &body.body, validator, &env, &mut types)? {
                Some((bytes, n)) => {
                    rewritten += 1;
                    points += n;
                    bodies.push(Some(bytes));
                }
                None => bodies.push(None),
            }
        } else {
            let mut validator = validator;
            validator
                .validate(&body.body)
                .map_err(|e| Refusal::Invalid(e.to_string()))?;
            bodies.push(None);
        }
    }
    for (index, export_name, ty) in [
        (
            state_global,
            global_export_name(state_global),
            GlobalType::I32,
        ),
        (sp_global, global_export_name(sp_global), GlobalType::I32),
    ]
    .into_iter()
    .chain(countdown_global.map(|g| (g, global_export_name(g), GlobalType::I32)))
    {
        info.globals.push(GlobalDesc {
            index,
            ty,
            export_name,
        });
    }
    info.memories.push(MemoryDesc {
        index: frame_memory,
        export_name: memory_export_name(frame_memory),
        initial_pages: 0,
        maximum_pages: Some(u64::from(options.frame_buffer_max_pages)),
        memory64: false,
        shared: false,
        page_size: 65536,
    });
    let unwind_imports = info
        .func_imports
        .iter()
        .enumerate()
        .filter(|(_, (module, name))| is_unwind_import(module, name))
        .map(|(i, (module, name))| (i as u32, format!("{module}::{name}")))
        .collect();
    Ok(ModuleRewrite {
        layout: UnwindLayout {
            state_global,
            sp_global,
            countdown_global,
            frame_memory,
            frame_memory_max_pages: options.frame_buffer_max_pages,
            rewritten_functions: rewritten,
            unwind_points: points,
            unwind_imports,
        },
        bodies,
        extra_types: types.extra,
        reserve_type,
        reserve_body: reserve_body(frame_memory),
        new_globals: 2 + u32::from(options.countdown),
    })
}

/// The helper every epilogue calls when the frame buffer is too small: grows it page by page until `end`
/// bytes fit, and traps when it cannot grow (the stack is deeper than the buffer's limit).
fn reserve_body(memory: u32) -> Vec<u8> {
    let mut f = Function::new([]);
    for i in [
        Instruction::Loop(BlockType::Empty),
        Instruction::MemorySize(memory),
        Instruction::I32Const(16),
        Instruction::I32Shl,
        Instruction::LocalGet(0),
        Instruction::I32LtU,
        Instruction::If(BlockType::Empty),
        Instruction::I32Const(1),
        Instruction::MemoryGrow(memory),
        Instruction::I32Const(-1),
        Instruction::I32Eq,
        Instruction::If(BlockType::Empty),
        Instruction::Unreachable,
        Instruction::End,
        Instruction::Br(1),
        Instruction::End,
        Instruction::End,
        Instruction::End,
    ] {
        f.instruction(&i);
    }
    f.into_raw_body()
}

/// Function types the rewrite needs, appended after the module's own.
struct TypeInterner<'i> {
    existing: &'i [Option<Sig>],
    extra: Vec<Sig>,
    known: HashMap<Sig, u32>,
}

impl<'i> TypeInterner<'i> {
    fn new(existing: &'i [Option<Sig>]) -> Self {
        Self {
            existing,
            extra: Vec::new(),
            known: HashMap::new(),
        }
    }

    fn intern(&mut self, sig: Sig) -> u32 {
        if let Some(&index) = self.known.get(&sig) {
            return index;
        }
        let index = match self.existing.iter().position(|s| s.as_ref() == Some(&sig)) {
            Some(i) => i as u32,
            None => {
                self.extra.push(sig.clone());
                (self.existing.len() + self.extra.len() - 1) as u32
            }
        };
        self.known.insert(sig, index);
        index
    }

    /// The block type of a rewritten construct: no parameters, these results.
    fn block(&mut self, results: &[ValType]) -> Result<BlockType, Refusal> {
        Ok(match results {
            [] => BlockType::Empty,
            [one] => BlockType::Result(val_type(*one)?),
            many => BlockType::FunctionType(self.intern(Sig {
                params: Vec::new(),
                results: many.to_vec(),
            })),
        })
    }
}

/// What every function's rewrite shares.
struct Env<'p> {
    plan: &'p Plan,
    /// Number of imported functions (function indices below it are imports).
    imported: u32,
    /// Whether an element segment puts an import into a table.
    tables_hold_imports: bool,
    state: u32,
    sp: u32,
    countdown: Option<u32>,
    memory: u32,
    reserve: u32,
}

fn val_type(ty: ValType) -> Result<wasm_encoder::ValType, Refusal> {
    RoundtripReencoder
        .val_type(ty)
        .map_err(|e| Refusal::Invalid(e.to_string()))
}

fn unsupported<T>(function: u32, what: impl std::fmt::Display) -> Result<T, Refusal> {
    Err(Refusal::Unsupported(format!("function {function} {what}")))
}

// ---------------------------------------------------------------------------------------------------
// Analysis: the body as a tree of frames, unwind points numbered in text order.
// ---------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Func,
    Block,
    Loop,
    If,
}

/// What a plain operator means to the label stack.
#[derive(Debug, Clone)]
enum Labels {
    None,
    /// Opens label `id` (a block, loop or `if` copied as it is).
    Open(u32),
    /// `else` of a construct copied as it is.
    Else,
    /// `end` of a construct copied as it is.
    Close,
    /// A branch to these labels (`br`, `br_if`: one; `br_table`: the targets then the default).
    Targets(Vec<u32>),
}

/// An operator copied as it is (branch depths adjusted).
#[derive(Debug, Clone)]
struct Plain<'a> {
    op: Operator<'a>,
    /// Lowest absolute operand-stack height it reads (its height minus what it pops).
    low: u32,
    labels: Labels,
}

/// A call that may unwind.
#[derive(Debug)]
struct CallSite<'a> {
    op: Operator<'a>,
    /// Its index in the body's operators.
    at: usize,
    id: u32,
    /// The operand stack before the call, arguments (and a `call_indirect`'s table index) on top.
    stack: Vec<ValType>,
    /// Operands the call pops.
    args: u32,
    results: Vec<ValType>,
}

/// A block, loop or `if` with an unwind point inside.
#[derive(Debug)]
struct Construct<'a> {
    kind: Kind,
    /// Index of its opening operator in the body's operators.
    at: usize,
    label: u32,
    params: Vec<ValType>,
    results: Vec<ValType>,
    /// The operand stack before the construct (parameters, and an `if`'s condition, on top).
    stack: Vec<ValType>,
    /// The body, or an `if`'s arms.
    arms: Vec<Frame<'a>>,
    /// The last unwind point inside.
    hi: u32,
    /// The loop header check's unwind point.
    check: Option<u32>,
}

#[derive(Debug)]
enum Item<'a> {
    Plain(Plain<'a>),
    Call(CallSite<'a>),
    Construct(Box<Construct<'a>>),
}

impl Item<'_> {
    /// The last unwind point in it.
    fn hi(&self) -> Option<u32> {
        match self {
            Item::Plain(_) => None,
            Item::Call(c) => Some(c.id),
            Item::Construct(c) => Some(c.hi),
        }
    }

    /// The operand stack before it.
    fn stack(&self) -> &[ValType] {
        match self {
            Item::Plain(_) => &[],
            Item::Call(c) => &c.stack,
            Item::Construct(c) => &c.stack,
        }
    }

    /// The operand stack after it.
    fn stack_after(&self) -> Vec<ValType> {
        match self {
            Item::Plain(_) => Vec::new(),
            Item::Call(c) => {
                let keep = c.stack.len() - c.args as usize;
                let mut s = c.stack[..keep].to_vec();
                s.extend_from_slice(&c.results);
                s
            }
            Item::Construct(c) => {
                let keep = c.arms[0].base as usize;
                let mut s = c.stack[..keep].to_vec();
                s.extend_from_slice(&c.results);
                s
            }
        }
    }
}

/// The function body, or one arm of a construct.
#[derive(Debug)]
struct Frame<'a> {
    kind: Kind,
    /// Absolute operand-stack height below the frame's parameters.
    base: u32,
    /// The operand stack when the frame starts (its parameters on top).
    start: Vec<ValType>,
    items: Vec<Item<'a>>,
}

/// A construct being read.
struct Builder<'a> {
    frame: Frame<'a>,
    /// `None` for the function body.
    meta: Option<Meta<'a>>,
    /// The `then` arm, once `else` was read.
    then: Option<Frame<'a>>,
    /// Whether the construct was entered in reachable code.
    live: bool,
}

struct Meta<'a> {
    kind: Kind,
    at: usize,
    label: u32,
    params: Vec<ValType>,
    results: Vec<ValType>,
    stack: Vec<ValType>,
    open: Plain<'a>,
    else_op: Option<Plain<'a>>,
    first_id: u32,
    check: Option<u32>,
}

struct Analysis<'a> {
    body: Frame<'a>,
    points: u32,
    /// Every operator of the body, in order (for the liveness of locals).
    ops: Vec<Operator<'a>>,
}

fn snapshot(v: &FuncValidator<ValidatorResources>, function: u32) -> Result<Vec<ValType>, Refusal> {
    let height = v.operand_stack_height() as usize;
    let mut stack = Vec::with_capacity(height);
    for depth in (0..height).rev() {
        match v.get_operand_type(depth) {
            Some(Some(ValType::Ref(_))) => {
                return unsupported(
                    function,
                    "has a reference on the operand stack at an unwind point",
                );
            }
            Some(Some(ty)) => stack.push(ty),
            _ => {
                return Err(Refusal::Invalid(format!(
                    "function {function}: unknown operand type in reachable code"
                )));
            }
        }
    }
    Ok(stack)
}

fn block_sig(v: &FuncValidator<ValidatorResources>, ty: WpBlockType) -> Result<Sig, Refusal> {
    use wasmparser::WasmModuleResources as _;
    Ok(match ty {
        WpBlockType::Empty => Sig {
            params: Vec::new(),
            results: Vec::new(),
        },
        WpBlockType::Type(t) => Sig {
            params: Vec::new(),
            results: vec![t],
        },
        WpBlockType::FuncType(index) => {
            let sub = v
                .resources()
                .sub_type_at(index)
                .ok_or_else(|| Refusal::Invalid(format!("unknown block type {index}")))?;
            let wasmparser::CompositeInnerType::Func(f) = &sub.composite_type.inner else {
                return Err(Refusal::Invalid(format!(
                    "block type {index} is not a function type"
                )));
            };
            Sig {
                params: f.params().to_vec(),
                results: f.results().to_vec(),
            }
        }
    })
}

fn analyze<'a>(
    function: u32,
    body: &FunctionBody<'a>,
    v: &mut FuncValidator<ValidatorResources>,
    env: &Env<'_>,
) -> Result<Analysis<'a>, Refusal> {
    let invalid = |e: wasmparser::BinaryReaderError| Refusal::Invalid(e.to_string());
    let mut builders: Vec<Builder<'a>> = vec![Builder {
        frame: Frame {
            kind: Kind::Func,
            base: 0,
            start: Vec::new(),
            items: Vec::new(),
        },
        meta: None,
        then: None,
        live: true,
    }];
    let mut ctl: Vec<u32> = vec![0];
    let mut next_label = 1u32;
    let mut next_id = 0u32;
    // Depth of constructs opened in unreachable code, which are copied as they are.
    let mut opaque = 0u32;
    let mut finished: Option<Frame<'a>> = None;
    let mut all: Vec<Operator<'a>> = Vec::new();
    let mut ops = body.get_operators_reader().map_err(invalid)?;
    while !ops.eof() {
        let (op, offset) = ops.read_with_offset().map_err(invalid)?;
        let at = all.len();
        all.push(op.clone());
        if finished.is_some() {
            return Err(Refusal::Invalid(
                "operators after the function's end".into(),
            ));
        }
        let height = v.operand_stack_height();
        let (pops, _) = op.operator_arity(&*v).ok_or_else(|| {
            Refusal::Unsupported(format!(
                "function {function} has an instruction of unknown arity"
            ))
        })?;
        let low = height.saturating_sub(pops);
        let current = builders
            .last()
            .ok_or_else(|| Refusal::Invalid("unbalanced blocks".into()))?;
        let unreachable_now = v.get_control_frame(0).is_none_or(|f| f.unreachable);
        let reachable = opaque == 0 && current.live && !unreachable_now;
        let label_of = |depth: u32| -> Result<u32, Refusal> {
            ctl.len()
                .checked_sub(1 + depth as usize)
                .map(|i| ctl[i])
                .ok_or_else(|| Refusal::Invalid("branch depth out of range".into()))
        };
        let plain = |labels: Labels| Plain {
            op: op.clone(),
            low,
            labels,
        };
        let mut item: Option<Item<'a>> = None;
        match &op {
            Operator::Block { blockty } | Operator::Loop { blockty } | Operator::If { blockty } => {
                let label = next_label;
                next_label += 1;
                let kind = match &op {
                    Operator::Block { .. } => Kind::Block,
                    Operator::Loop { .. } => Kind::Loop,
                    _ => Kind::If,
                };
                if !reachable {
                    opaque += 1;
                    item = Some(Item::Plain(plain(Labels::Open(label))));
                } else {
                    if builders.len() > MAX_NESTING {
                        return unsupported(
                            function,
                            format!("nests blocks more than {MAX_NESTING} deep"),
                        );
                    }
                    let sig = block_sig(v, *blockty)?;
                    let stack = snapshot(v, function)?;
                    let cond = u32::from(kind == Kind::If) as usize;
                    let start_len = stack.len() - cond;
                    let start = stack[..start_len].to_vec();
                    let base = (start_len - sig.params.len()) as u32;
                    let check = (kind == Kind::Loop && env.plan.loop_checks).then(|| {
                        next_id += 1;
                        next_id - 1
                    });
                    builders.push(Builder {
                        frame: Frame {
                            kind,
                            base,
                            start,
                            items: Vec::new(),
                        },
                        meta: Some(Meta {
                            kind,
                            at,
                            label,
                            params: sig.params,
                            results: sig.results,
                            stack,
                            open: plain(Labels::Open(label)),
                            else_op: None,
                            first_id: check.unwrap_or(next_id),
                            check,
                        }),
                        then: None,
                        live: true,
                    });
                }
                ctl.push(label);
            }
            Operator::Else => {
                if opaque > 0 {
                    item = Some(Item::Plain(plain(Labels::Else)));
                } else {
                    let b = builders
                        .last_mut()
                        .ok_or_else(|| Refusal::Invalid("else outside a block".into()))?;
                    let meta = b
                        .meta
                        .as_mut()
                        .ok_or_else(|| Refusal::Invalid("else outside an if".into()))?;
                    meta.else_op = Some(Plain {
                        op: op.clone(),
                        low,
                        labels: Labels::Else,
                    });
                    let arm = Frame {
                        kind: Kind::If,
                        base: b.frame.base,
                        start: b.frame.start.clone(),
                        items: Vec::new(),
                    };
                    b.then = Some(std::mem::replace(&mut b.frame, arm));
                }
            }
            Operator::End => {
                if opaque > 0 {
                    opaque -= 1;
                    item = Some(Item::Plain(plain(Labels::Close)));
                } else if builders.len() == 1 {
                    let b = builders
                        .pop()
                        .ok_or_else(|| Refusal::Invalid("unbalanced blocks".into()))?;
                    finished = Some(b.frame);
                } else {
                    let b = builders
                        .pop()
                        .ok_or_else(|| Refusal::Invalid("unbalanced blocks".into()))?;
                    let meta = b
                        .meta
                        .ok_or_else(|| Refusal::Invalid("unbalanced blocks".into()))?;
                    let end = Plain {
                        op: op.clone(),
                        low,
                        labels: Labels::Close,
                    };
                    let parent = builders
                        .last_mut()
                        .ok_or_else(|| Refusal::Invalid("unbalanced blocks".into()))?;
                    let (then, otherwise) = match b.then {
                        Some(then) => (then, Some(b.frame)),
                        None => (b.frame, None),
                    };
                    if next_id > meta.first_id {
                        let mut arms = vec![then];
                        arms.extend(otherwise);
                        parent.frame.items.push(Item::Construct(Box::new(Construct {
                            kind: meta.kind,
                            at: meta.at,
                            label: meta.label,
                            params: meta.params,
                            results: meta.results,
                            stack: meta.stack,
                            arms,
                            hi: next_id - 1,
                            check: meta.check,
                        })));
                    } else {
                        // Nothing inside can unwind: the construct is copied as it is.
                        let items = &mut parent.frame.items;
                        items.push(Item::Plain(meta.open));
                        items.extend(then.items);
                        if let Some(else_op) = meta.else_op {
                            items.push(Item::Plain(else_op));
                        }
                        if let Some(otherwise) = otherwise {
                            items.extend(otherwise.items);
                        }
                        items.push(Item::Plain(end));
                    }
                }
                ctl.pop();
            }
            Operator::Call { function_index }
                if reachable
                    && env
                        .plan
                        .can_unwind
                        .get(*function_index as usize)
                        .copied()
                        .unwrap_or(false) =>
            {
                use wasmparser::ModuleArity as _;
                let ty = v
                    .type_index_of_function(*function_index)
                    .ok_or_else(|| Refusal::Invalid("unknown callee".into()))?;
                let callee = block_sig(v, WpBlockType::FuncType(ty))?;
                let (args, results) = (callee.params.len() as u32, callee.results);
                item = Some(Item::Call(CallSite {
                    op: op.clone(),
                    at,
                    id: next_id,
                    stack: snapshot(v, function)?,
                    args,
                    results,
                }));
                next_id += 1;
            }
            Operator::CallIndirect { type_index, .. }
                if reachable
                    && env
                        .plan
                        .unwinding_types
                        .get(*type_index as usize)
                        .copied()
                        .unwrap_or(false) =>
            {
                let sig = block_sig(v, WpBlockType::FuncType(*type_index))?;
                item = Some(Item::Call(CallSite {
                    op: op.clone(),
                    at,
                    id: next_id,
                    stack: snapshot(v, function)?,
                    args: sig.params.len() as u32 + 1,
                    results: sig.results,
                }));
                next_id += 1;
            }
            Operator::Br { relative_depth } | Operator::BrIf { relative_depth } => {
                item = Some(Item::Plain(plain(Labels::Targets(vec![label_of(
                    *relative_depth,
                )?]))));
            }
            Operator::BrTable { targets } => {
                let mut labels = Vec::with_capacity(targets.len() as usize + 1);
                for t in targets.targets() {
                    labels.push(label_of(t.map_err(invalid)?)?);
                }
                labels.push(label_of(targets.default())?);
                item = Some(Item::Plain(plain(Labels::Targets(labels))));
            }
            Operator::Try { .. }
            | Operator::TryTable { .. }
            | Operator::Delegate { .. }
            | Operator::Rethrow { .. }
            | Operator::Catch { .. }
            | Operator::CatchAll
            | Operator::BrOnNull { .. }
            | Operator::BrOnNonNull { .. }
            | Operator::BrOnCast { .. }
            | Operator::BrOnCastFail { .. } => {
                // The call graph refuses these on paths to unwind points; reaching one here means a
                // function was planned that should not have been.
                return unsupported(function, "uses exception handling or reference branches");
            }
            _ => item = Some(Item::Plain(plain(Labels::None))),
        }
        if let Some(item) = item {
            builders
                .last_mut()
                .ok_or_else(|| Refusal::Invalid("unbalanced blocks".into()))?
                .frame
                .items
                .push(item);
        }
        v.op(offset, &op).map_err(invalid)?;
    }
    let body = finished.ok_or_else(|| Refusal::Invalid("function body without an end".into()))?;
    Ok(Analysis {
        body,
        points: next_id,
        ops: all,
    })
}

// ---------------------------------------------------------------------------------------------------
// Emission.
// ---------------------------------------------------------------------------------------------------

/// A label of the rewritten code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    /// The label of an original construct (or, 0, the function).
    Orig(u32),
    /// A block or `if` the rewrite added.
    Synth,
    /// The block whose end leads to save stub `k` (the frame's live values at some unwind points).
    Stub(u32),
    /// The block whose end leads to the common tail of every stub.
    Common,
}

struct Emitter<'a, 'x, 'i> {
    function: u32,
    env: &'x Env<'x>,
    types: &'x mut TypeInterner<'i>,
    out: Vec<Instruction<'a>>,
    /// Where the prologue's frame reload goes.
    marker: Option<usize>,
    labels: Vec<Label>,
    slots: HashMap<(u32, ValType), u32>,
    /// The local holding each rewritten `if`'s condition, by label: a slot of its own, since the arms
    /// reuse the condition's stack height for their own values.
    conds: HashMap<u32, u32>,
    resume: u32,
    scratch: u32,
    /// Rewritten loops that have parameters: their label, and where their parameters' slots start.
    loop_params: HashMap<u32, (u32, Vec<ValType>)>,
    /// The save stub of each unwind point.
    stub_of: HashMap<u32, u32>,
}

impl<'a> Emitter<'a, '_, '_> {
    fn push(&mut self, i: Instruction<'a>) {
        self.out.push(i);
    }

    fn open(&mut self, i: Instruction<'a>, label: Label) {
        self.out.push(i);
        self.labels.push(label);
    }

    fn close(&mut self) {
        self.out.push(Instruction::End);
        self.labels.pop();
    }

    /// Relative depth of `label` from here.
    fn depth(&self, label: Label) -> Result<u32, Refusal> {
        self.labels
            .iter()
            .rev()
            .position(|l| *l == label)
            .map(|d| d as u32)
            .ok_or_else(|| Refusal::Invalid(format!("label {label:?} is not in scope")))
    }

    /// Relative depth of the label at absolute position `at` in the label stack.
    fn depth_at(&self, at: usize) -> u32 {
        (self.labels.len() - 1 - at) as u32
    }

    fn slot(&self, height: u32, ty: ValType) -> Result<u32, Refusal> {
        self.slots
            .get(&(height, ty))
            .copied()
            .ok_or_else(|| Refusal::Invalid(format!("no slot for height {height}")))
    }

    fn cond(&self, label: u32) -> Result<u32, Refusal> {
        self.conds
            .get(&label)
            .copied()
            .ok_or_else(|| Refusal::Invalid(format!("no condition local for label {label}")))
    }

    /// Pushes the stack values `from..stack.len()` from their slots.
    fn reload(&mut self, stack: &[ValType], from: u32) -> Result<(), Refusal> {
        for (h, ty) in stack.iter().enumerate().skip(from as usize) {
            let slot = self.slot(h as u32, *ty)?;
            self.push(Instruction::LocalGet(slot));
        }
        Ok(())
    }

    /// Pops the stack values `from..stack.len()` into their slots.
    fn spill(&mut self, stack: &[ValType], from: u32) -> Result<(), Refusal> {
        for (h, ty) in stack.iter().enumerate().skip(from as usize).rev() {
            let slot = self.slot(h as u32, *ty)?;
            self.push(Instruction::LocalSet(slot));
        }
        Ok(())
    }

    fn state_is(&mut self, value: i32) {
        self.push(Instruction::GlobalGet(self.env.state));
        self.push(Instruction::I32Const(value));
        self.push(Instruction::I32Eq);
    }

    fn set_state(&mut self, value: i32) {
        self.push(Instruction::I32Const(value));
        self.push(Instruction::GlobalSet(self.env.state));
    }

    /// `br_if` to the dispatch label of the item containing the resume point, for each unwind-point item of
    /// the frame (`dispatch[i]` is the label-stack position of item `i`'s dispatch block); a point past them
    /// all leaves by `exit`, or is a bug.
    fn chain(
        &mut self,
        his: &[u32],
        dispatch: &[usize],
        exit: Option<Label>,
    ) -> Result<(), Refusal> {
        for (hi, at) in his.iter().zip(dispatch) {
            self.push(Instruction::LocalGet(self.resume));
            self.push(Instruction::I32Const(*hi as i32));
            self.push(Instruction::I32LeU);
            let depth = self.depth_at(*at);
            self.push(Instruction::BrIf(depth));
        }
        match exit {
            Some(label) => {
                let depth = self.depth(label)?;
                self.push(Instruction::Br(depth));
            }
            None => self.push(Instruction::Unreachable),
        }
        Ok(())
    }

    /// Starts unwinding at unwind point `id` (the state is already [`UNWINDING`]): to the stub that saves
    /// what is live there.
    fn leave(&mut self, id: u32) -> Result<(), Refusal> {
        self.push(Instruction::I32Const(id as i32));
        self.push(Instruction::LocalSet(self.resume));
        let stub = self
            .stub_of
            .get(&id)
            .copied()
            .ok_or_else(|| Refusal::Invalid(format!("unwind point {id} has no save stub")))?;
        let exit = self.depth(Label::Stub(stub))?;
        self.push(Instruction::Br(exit));
        Ok(())
    }

    /// Emits a frame. `exit`: where to leave it when a rewind looks for a point beyond it — it is the first
    /// item of a frame that let it dispatch for both (see [`Self::items`]); `None`: that would be a bug.
    fn frame(
        &mut self,
        frame: Frame<'a>,
        check: Option<u32>,
        exit: Option<Label>,
    ) -> Result<(), Refusal> {
        // A block or arm whose first item is a rewritten block (a `switch` lowered to nested blocks
        // around a `br_table` is a deep nest of them) needs no check of its own on entry: the nest is
        // entered without one, the innermost frame that has code of its own dispatches, leaving by the
        // blocks' ends for points further out, and each frame checks again only after its first block.
        // The normal path then pays one check per block that ends, not one per block entered.
        let omit = matches!(frame.kind, Kind::Block | Kind::If)
            && matches!(frame.items.first(), Some(Item::Construct(c))
                if c.kind == Kind::Block && c.params.is_empty() && c.results.is_empty());
        let Frame {
            kind,
            base,
            start,
            items,
        } = frame;
        if !omit {
            return self.items(kind, items, start, base, check, exit);
        }
        let mut items = items.into_iter();
        let Some(first @ Item::Construct(_)) = items.next() else {
            return Err(Refusal::Invalid("a frame lost its first block".into()));
        };
        let after = first.stack_after();
        let rest: Vec<Item<'a>> = items.collect();
        // With no unwind point after the block, a rewind looking further out leaves this frame straight
        // from inside the block, and the frame checks nothing after it.
        let more = rest.iter().any(|i| i.hi().is_some());
        if let Item::Construct(block) = first {
            let leave = if more {
                Some(Label::Orig(block.label))
            } else {
                exit
            };
            self.construct(*block, leave)?;
        }
        // The rest of the frame, with its own check after the block.
        self.items(
            Kind::Block,
            rest,
            after,
            base,
            None,
            if more { exit } else { None },
        )
    }

    /// Emits a frame's items, from the operand stack `start`, with its dispatch blocks and its head: the
    /// function's prologue, a loop's header check, or a block's or arm's rewind check.
    fn items(
        &mut self,
        kind: Kind,
        items: Vec<Item<'a>>,
        start: Vec<ValType>,
        base: u32,
        check: Option<u32>,
        exit: Option<Label>,
    ) -> Result<(), Refusal> {
        let his: Vec<u32> = items.iter().filter_map(Item::hi).collect();
        // Dispatch blocks, the outermost for the last unwind-point item.
        let mut dispatch = vec![0usize; his.len()];
        for i in (0..his.len()).rev() {
            self.open(Instruction::Block(BlockType::Empty), Label::Synth);
            dispatch[i] = self.labels.len() - 1;
        }
        match (kind, check) {
            (Kind::Func, _) => {
                self.state_is(REWINDING);
                self.open(Instruction::If(BlockType::Empty), Label::Synth);
                // The frame is reloaded here; the prologue is spliced in once every slot is known.
                self.marker = Some(self.out.len());
                self.chain(&his, &dispatch, exit)?;
                self.close();
            }
            (Kind::Loop, Some(check)) => {
                if let Some(countdown) = self.env.countdown {
                    self.push(Instruction::GlobalGet(self.env.state));
                    self.push(Instruction::I32Eqz);
                    self.open(Instruction::If(BlockType::Empty), Label::Synth);
                    self.push(Instruction::GlobalGet(countdown));
                    self.open(Instruction::If(BlockType::Empty), Label::Synth);
                    self.push(Instruction::GlobalGet(countdown));
                    self.push(Instruction::I32Const(1));
                    self.push(Instruction::I32Sub);
                    self.push(Instruction::GlobalSet(countdown));
                    self.push(Instruction::GlobalGet(countdown));
                    self.push(Instruction::I32Eqz);
                    self.open(Instruction::If(BlockType::Empty), Label::Synth);
                    self.set_state(REQUESTED);
                    self.close();
                    self.close();
                    self.close();
                }
                self.push(Instruction::GlobalGet(self.env.state));
                self.open(Instruction::If(BlockType::Empty), Label::Synth);
                self.state_is(REQUESTED);
                self.open(Instruction::If(BlockType::Empty), Label::Synth);
                self.set_state(UNWINDING);
                self.leave(check)?;
                self.close();
                self.push(Instruction::LocalGet(self.resume));
                self.push(Instruction::I32Const(check as i32));
                self.push(Instruction::I32Eq);
                self.open(Instruction::If(BlockType::Empty), Label::Synth);
                self.set_state(NORMAL);
                self.push(Instruction::Else);
                self.chain(&his, &dispatch, exit)?;
                self.close();
                self.close();
            }
            // An arm without unwind points that no rewind passes through: nothing to check.
            _ if his.is_empty() && exit.is_none() => {}
            _ => {
                self.state_is(REWINDING);
                self.open(Instruction::If(BlockType::Empty), Label::Synth);
                self.chain(&his, &dispatch, exit)?;
                self.close();
            }
        }

        let mut cur: Vec<ValType> = start;
        let mut pending: Vec<Plain<'a>> = Vec::new();
        let mut next_dispatch = 0usize;
        for item in items {
            let item = match item {
                Item::Plain(p) => {
                    pending.push(p);
                    continue;
                }
                other => other,
            };
            // A middle segment: reload what it reads, run it, spill what it leaves.
            let before = item.stack().to_vec();
            let low = pending
                .iter()
                .map(|p| p.low)
                .min()
                .unwrap_or(cur.len() as u32)
                .max(base)
                .min(cur.len() as u32)
                .min(before.len() as u32);
            self.reload(&cur, low)?;
            for p in pending.drain(..) {
                self.plain(p)?;
            }
            self.spill(&before, low)?;
            if let Item::Construct(c) = &item
                && c.kind == Kind::If
            {
                // The condition to its own local, skipped by a rewind (which reloads that local).
                let slot = self.slot(before.len() as u32 - 1, ValType::I32)?;
                let cond = self.cond(c.label)?;
                self.push(Instruction::LocalGet(slot));
                self.push(Instruction::LocalSet(cond));
            }
            // Close this item's dispatch block: a rewind to it lands here.
            debug_assert_eq!(self.labels.len() - 1, dispatch[next_dispatch]);
            self.close();
            next_dispatch += 1;
            cur = item.stack_after();
            match item {
                Item::Call(call) => self.call(call)?,
                Item::Construct(c) => self.construct(*c, None)?,
                Item::Plain(_) => {}
            }
        }
        // The last segment: the frame's whole stack back, then its code up to the frame's end.
        self.reload(&cur, base)?;
        for p in pending {
            self.plain(p)?;
        }
        Ok(())
    }

    fn call(&mut self, call: CallSite<'a>) -> Result<(), Refusal> {
        let keep = (call.stack.len() as u32) - call.args;
        self.reload(&call.stack, keep)?;
        let op = RoundtripReencoder
            .instruction(call.op)
            .map_err(|e| Refusal::Invalid(e.to_string()))?;
        self.push(op);
        self.state_is(UNWINDING);
        self.open(Instruction::If(BlockType::Empty), Label::Synth);
        self.leave(call.id)?;
        self.close();
        let mut after = call.stack[..keep as usize].to_vec();
        after.extend_from_slice(&call.results);
        self.spill(&after, keep)?;
        Ok(())
    }

    fn construct(&mut self, mut c: Construct<'a>, exit: Option<Label>) -> Result<(), Refusal> {
        let bt = self.types.block(&c.results)?;
        let mut arms = std::mem::take(&mut c.arms).into_iter();
        let first = arms
            .next()
            .ok_or_else(|| Refusal::Invalid("construct without a body".into()))?;
        let base = first.base;
        match c.kind {
            Kind::Block => {
                self.open(Instruction::Block(bt), Label::Orig(c.label));
                self.frame(first, None, exit)?;
                self.close();
            }
            Kind::Loop => {
                if !c.params.is_empty() {
                    self.loop_params.insert(c.label, (base, c.params.clone()));
                }
                self.open(Instruction::Loop(bt), Label::Orig(c.label));
                self.frame(first, c.check, None)?;
                self.close();
            }
            Kind::If => {
                let cond = self.cond(c.label)?;
                self.push(Instruction::LocalGet(cond));
                self.open(Instruction::If(bt), Label::Orig(c.label));
                let start = first.start.clone();
                self.frame(first, None, None)?;
                self.push(Instruction::Else);
                match arms.next() {
                    Some(otherwise) => self.frame(otherwise, None, None)?,
                    // An `if` without `else` passes its parameters through.
                    None => self.reload(&start, base)?,
                }
                self.close();
            }
            Kind::Func => return Err(Refusal::Invalid("nested function frame".into())),
        }
        // Its results go to their slots, like a call's.
        let mut after = c.stack[..base as usize].to_vec();
        after.extend_from_slice(&c.results);
        self.spill(&after, base)
    }

    fn plain(&mut self, p: Plain<'a>) -> Result<(), Refusal> {
        let Plain { op, labels, .. } = p;
        match (&op, labels) {
            (_, Labels::Open(label)) => {
                let i = RoundtripReencoder
                    .instruction(op)
                    .map_err(|e| Refusal::Invalid(e.to_string()))?;
                self.open(i, Label::Orig(label));
            }
            (_, Labels::Close) => self.close(),
            (Operator::Br { .. }, Labels::Targets(t)) => {
                let target = t[0];
                self.loop_operands(target, false)?;
                let d = self.depth(Label::Orig(target))?;
                self.push(Instruction::Br(d));
            }
            (Operator::BrIf { .. }, Labels::Targets(t)) => {
                let target = t[0];
                self.loop_operands(target, true)?;
                let d = self.depth(Label::Orig(target))?;
                self.push(Instruction::BrIf(d));
            }
            (Operator::BrTable { .. }, Labels::Targets(t)) => {
                let mut depths = Vec::with_capacity(t.len());
                for target in &t {
                    if self.loop_params.contains_key(target) {
                        return unsupported(
                            self.function,
                            "has a `br_table` to a loop with parameters on a path to an unwind point",
                        );
                    }
                    depths.push(self.depth(Label::Orig(*target))?);
                }
                let default = depths.pop().unwrap_or(0);
                self.push(Instruction::BrTable(depths.into(), default));
            }
            _ => {
                let i = RoundtripReencoder
                    .instruction(op)
                    .map_err(|e| Refusal::Invalid(e.to_string()))?;
                self.push(i);
            }
        }
        Ok(())
    }

    /// Before a branch to a rewritten loop with parameters: its operands go to the loop's slots (for
    /// `br_if`, copies of them, the condition set aside and put back).
    fn loop_operands(&mut self, target: u32, conditional: bool) -> Result<(), Refusal> {
        let Some((base, params)) = self.loop_params.get(&target).cloned() else {
            return Ok(());
        };
        if conditional {
            self.push(Instruction::LocalSet(self.scratch));
        }
        let mut stack: Vec<ValType> = vec![ValType::I32; base as usize];
        stack.extend_from_slice(&params);
        self.spill(&stack, base)?;
        if conditional {
            self.reload(&stack, base)?;
            self.push(Instruction::LocalGet(self.scratch));
        }
        Ok(())
    }
}

/// Collects the operator index of every unwind point: calls, and the loops whose heads are checked.
fn collect_points(frame: &Frame<'_>, out: &mut Vec<usize>) {
    for item in &frame.items {
        match item {
            Item::Plain(_) => {}
            Item::Call(c) => out.push(c.at),
            Item::Construct(c) => {
                if c.check.is_some() {
                    out.push(c.at);
                }
                for arm in &c.arms {
                    collect_points(arm, out);
                }
            }
        }
    }
}

/// Finds what each unwind point saves.
struct SaveSets<'s> {
    live: &'s HashMap<usize, super::liveness::Locals>,
    slots: &'s HashMap<(u32, ValType), u32>,
    conds: &'s HashMap<u32, u32>,
    env: &'s Env<'s>,
}

impl SaveSets<'_> {
    /// The slots of the stack values `0..upto` of `stack`.
    fn stack(&self, stack: &[ValType], upto: usize, set: &mut Vec<u32>) -> Result<(), Refusal> {
        for (h, ty) in stack.iter().enumerate().take(upto) {
            let slot = self
                .slots
                .get(&(h as u32, *ty))
                .copied()
                .ok_or_else(|| Refusal::Invalid(format!("no slot for height {h}")))?;
            set.push(slot);
        }
        Ok(())
    }

    fn finish(&self, at: usize, conds: &[u32], mut set: Vec<u32>) -> Vec<u32> {
        if let Some(live) = self.live.get(&at) {
            set.extend(live.iter());
        }
        set.extend_from_slice(conds);
        set.sort_unstable();
        set.dedup();
        set
    }

    fn walk(
        &self,
        frame: &Frame<'_>,
        conds: &mut Vec<u32>,
        out: &mut Vec<(u32, Vec<u32>)>,
    ) -> Result<(), Refusal> {
        for item in &frame.items {
            match item {
                Item::Plain(_) => {}
                Item::Call(c) => {
                    let height = c.stack.len();
                    let below = height - c.args as usize;
                    // The rewind calls an import again with its arguments; a rewritten callee reloads its
                    // own locals, so its arguments need not be kept — but a `call_indirect`'s table index
                    // must be, to reach the same function (and all its arguments when a table can hold an
                    // import).
                    let mut set = Vec::new();
                    match c.op {
                        Operator::Call { function_index } if function_index < self.env.imported => {
                            self.stack(&c.stack, height, &mut set)?
                        }
                        Operator::CallIndirect { .. } if self.env.tables_hold_imports => {
                            self.stack(&c.stack, height, &mut set)?
                        }
                        Operator::CallIndirect { .. } => {
                            self.stack(&c.stack, below, &mut set)?;
                            let index = self
                                .slots
                                .get(&(height as u32 - 1, ValType::I32))
                                .copied()
                                .ok_or_else(|| {
                                    Refusal::Invalid("no slot for a table index".into())
                                })?;
                            set.push(index);
                        }
                        _ => self.stack(&c.stack, below, &mut set)?,
                    }
                    out.push((c.id, self.finish(c.at, conds, set)));
                }
                Item::Construct(c) => {
                    if let Some(check) = c.check {
                        // At the loop's head the loop's parameters are still in their slots.
                        let mut set = Vec::new();
                        self.stack(&c.stack, c.stack.len(), &mut set)?;
                        out.push((check, self.finish(c.at, conds, set)));
                    }
                    let cond = if c.kind == Kind::If {
                        Some(self.conds.get(&c.label).copied().ok_or_else(|| {
                            Refusal::Invalid(format!("no condition local for label {}", c.label))
                        })?)
                    } else {
                        None
                    };
                    conds.extend(cond);
                    for arm in &c.arms {
                        self.walk(arm, conds, out)?;
                    }
                    if cond.is_some() {
                        conds.pop();
                    }
                }
            }
        }
        Ok(())
    }
}

/// Collects the labels of the rewritten `if`s.
fn collect_ifs(frame: &Frame<'_>, out: &mut Vec<u32>) {
    for item in &frame.items {
        if let Item::Construct(c) = item {
            if c.kind == Kind::If {
                out.push(c.label);
            }
            for arm in &c.arms {
                collect_ifs(arm, out);
            }
        }
    }
}

/// Collects every (height, type) a stack value may be spilled at.
fn collect_slots(frame: &Frame<'_>, out: &mut Vec<(u32, ValType)>) {
    fn add(out: &mut Vec<(u32, ValType)>, stack: &[ValType]) {
        for (h, ty) in stack.iter().enumerate() {
            out.push((h as u32, *ty));
        }
    }
    add(out, &frame.start);
    for item in &frame.items {
        match item {
            Item::Plain(_) => {}
            Item::Call(c) => {
                add(out, &c.stack);
                add(out, &item.stack_after());
            }
            Item::Construct(c) => {
                add(out, &c.stack);
                add(out, &item.stack_after());
                for arm in &c.arms {
                    collect_slots(arm, out);
                }
            }
        }
    }
}

fn size_of(ty: ValType) -> u32 {
    match ty {
        ValType::I32 | ValType::F32 => 4,
        ValType::I64 | ValType::F64 => 8,
        ValType::V128 => 16,
        ValType::Ref(_) => 0,
    }
}

fn memarg(offset: u32, memory: u32) -> MemArg {
    MemArg {
        offset: u64::from(offset),
        align: 0,
        memory_index: memory,
    }
}

fn load(ty: ValType, m: MemArg) -> Instruction<'static> {
    match ty {
        ValType::I32 => Instruction::I32Load(m),
        ValType::I64 => Instruction::I64Load(m),
        ValType::F32 => Instruction::F32Load(m),
        ValType::F64 => Instruction::F64Load(m),
        _ => Instruction::V128Load(m),
    }
}

fn store(ty: ValType, m: MemArg) -> Instruction<'static> {
    match ty {
        ValType::I32 => Instruction::I32Store(m),
        ValType::I64 => Instruction::I64Store(m),
        ValType::F32 => Instruction::F32Store(m),
        ValType::F64 => Instruction::F64Store(m),
        _ => Instruction::V128Store(m),
    }
}

/// The dummy value of type `ty` a function returns while unwinding (its caller drops it). A reference
/// result gets a null reference of its heap type: a vector there makes the output invalid. A non-nullable
/// reference has no such value, so a function returning one cannot be rewritten.
fn zero(function: u32, ty: ValType) -> Result<Instruction<'static>, Refusal> {
    Ok(match ty {
        ValType::I32 => Instruction::I32Const(0),
        ValType::I64 => Instruction::I64Const(0),
        ValType::F32 => Instruction::F32Const(wasm_encoder::Ieee32::new(0)),
        ValType::F64 => Instruction::F64Const(wasm_encoder::Ieee64::new(0)),
        ValType::V128 => Instruction::V128Const(0),
        ValType::Ref(r) if r.is_nullable() => Instruction::RefNull(
            RoundtripReencoder
                .heap_type(r.heap_type())
                .map_err(|e| Refusal::Invalid(e.to_string()))?,
        ),
        ValType::Ref(_) => return unsupported(function, "returns a non-nullable reference"),
    })
}

/// Rewrites one function; `None` when it has no reachable unwind point after all (it is then copied).
fn rewrite_function<'a>(
    function: u32,
    sig: &Sig,
    body: &FunctionBody<'a>,
    mut v: FuncValidator<ValidatorResources>,
    env: &Env<'_>,
    types: &mut TypeInterner<'_>,
) -> Result<Option<(Vec<u8>, u32)>, Refusal> {
    let invalid = |e: wasmparser::BinaryReaderError| Refusal::Invalid(e.to_string());
    // Locals: the parameters, then the declared ones.
    let mut locals: Vec<ValType> = sig.params.clone();
    let mut declared: Vec<(u32, ValType)> = Vec::new();
    let mut reader = body.get_locals_reader().map_err(invalid)?;
    for _ in 0..reader.get_count() {
        let offset = reader.original_position();
        let (count, ty) = reader.read().map_err(invalid)?;
        v.define_locals(offset, count, ty).map_err(invalid)?;
        if matches!(ty, ValType::Ref(_)) {
            return unsupported(function, "has a local of reference type");
        }
        declared.push((count, ty));
        locals.extend(std::iter::repeat_n(ty, count as usize));
    }
    let analysis = analyze(function, body, &mut v, env)?;
    if analysis.points == 0 {
        return Ok(None);
    }

    // New locals after the originals: the resume point, the frame pointer, a scratch i32, the slots.
    let first_new = locals.len() as u32;
    let resume = first_new;
    let fp = first_new + 1;
    let scratch = first_new + 2;
    let mut wanted = Vec::new();
    collect_slots(&analysis.body, &mut wanted);
    wanted.sort_unstable_by_key(|(h, ty)| (*h, size_of(*ty), format!("{ty}")));
    wanted.dedup();
    let mut slots = HashMap::new();
    let mut slot_types = Vec::new();
    for (i, key) in wanted.iter().enumerate() {
        slots.insert(*key, first_new + 3 + i as u32);
        slot_types.push(key.1);
    }
    let mut ifs = Vec::new();
    collect_ifs(&analysis.body, &mut ifs);
    let mut conds = HashMap::new();
    for label in ifs {
        conds.insert(label, first_new + 3 + slot_types.len() as u32);
        slot_types.push(ValType::I32);
    }
    // What each unwind point saves: the locals live there, the operand-stack values below its call's
    // arguments (the arguments too when the callee is an import, which the rewind calls again with them),
    // and the conditions of the `if`s around it. Points that save the same share a stub.
    let mut points_at = Vec::new();
    collect_points(&analysis.body, &mut points_at);
    let live = super::liveness::live_after(&analysis.ops, locals.len(), &points_at)
        .ok_or_else(|| Refusal::Invalid(format!("function {function} is not well nested")))?;
    let mut sets: Vec<(u32, Vec<u32>)> = Vec::new();
    let finder = SaveSets {
        live: &live,
        slots: &slots,
        conds: &conds,
        env,
    };
    finder.walk(&analysis.body, &mut Vec::new(), &mut sets)?;
    let mut stubs: Vec<Vec<u32>> = Vec::new();
    let mut stub_index: HashMap<Vec<u32>, u32> = HashMap::new();
    let mut stub_of = HashMap::new();
    for (id, set) in sets {
        let k = *stub_index.entry(set.clone()).or_insert_with(|| {
            stubs.push(set);
            stubs.len() as u32 - 1
        });
        stub_of.insert(id, k);
    }
    // The frame holds every local any point saves, at a fixed offset; the prologue reloads them all
    // (a local a point did not save is dead there, so whatever it reloads is never read).
    let mut kept: Vec<u32> = stubs.iter().flatten().copied().collect();
    kept.sort_unstable();
    kept.dedup();
    let local_type = |local: u32| -> ValType {
        if (local as usize) < locals.len() {
            locals[local as usize]
        } else {
            slot_types[(local - first_new - 3) as usize]
        }
    };
    let mut offsets: HashMap<u32, u32> = HashMap::new();
    let mut offset = FRAME_HEADER;
    for &local in &kept {
        offsets.insert(local, offset);
        offset = offset
            .checked_add(size_of(local_type(local)))
            .ok_or_else(|| {
                Refusal::Unsupported(format!("function {function} has too many locals"))
            })?;
    }
    let frame_size = offset;
    if frame_size > i32::MAX as u32 / 2 {
        return unsupported(function, "has a frame too large to save");
    }

    let mut emitter = Emitter {
        function,
        env,
        types,
        out: Vec::new(),
        marker: None,
        labels: vec![Label::Orig(0)],
        slots,
        conds,
        resume,
        scratch,
        loop_params: HashMap::new(),
        stub_of,
    };
    let mem = env.memory;
    // The body inside one block per stub (stub 0 innermost) inside the common tail's block: a branch to
    // stub k's block lands on stub k, which saves its locals and goes on to the tail.
    emitter.open(Instruction::Block(BlockType::Empty), Label::Common);
    for k in (0..stubs.len() as u32).rev() {
        emitter.open(Instruction::Block(BlockType::Empty), Label::Stub(k));
    }
    emitter.frame(analysis.body, None, None)?;
    emitter.push(Instruction::Return);
    for (k, set) in stubs.iter().enumerate() {
        emitter.close();
        emitter.out.extend([
            Instruction::GlobalGet(env.sp),
            Instruction::LocalTee(fp),
            Instruction::I32Const(frame_size as i32),
            Instruction::I32Add,
            Instruction::MemorySize(mem),
            Instruction::I32Const(16),
            Instruction::I32Shl,
            Instruction::I32GtU,
            Instruction::If(BlockType::Empty),
            Instruction::LocalGet(fp),
            Instruction::I32Const(frame_size as i32),
            Instruction::I32Add,
            Instruction::Call(env.reserve),
            Instruction::End,
        ]);
        for &local in set {
            emitter.out.extend([
                Instruction::LocalGet(fp),
                Instruction::LocalGet(local),
                store(local_type(local), memarg(offsets[&local], mem)),
            ]);
        }
        if k + 1 < stubs.len() {
            let common = emitter.depth(Label::Common)?;
            emitter.push(Instruction::Br(common));
        }
    }
    emitter.close();
    // The common tail: the frame's header, the buffer's new top, dummy results.
    emitter.out.extend([
        Instruction::LocalGet(fp),
        Instruction::I32Const(function as i32),
        Instruction::I32Store(memarg(0, mem)),
        Instruction::LocalGet(fp),
        Instruction::LocalGet(resume),
        Instruction::I32Store(memarg(4, mem)),
        Instruction::LocalGet(fp),
        Instruction::I32Const(frame_size as i32),
        Instruction::I32Add,
        Instruction::GlobalSet(env.sp),
    ]);
    for ty in &sig.results {
        emitter.out.push(zero(function, *ty)?);
    }
    emitter.out.push(Instruction::End);
    // The prologue's reload, spliced where the body's head left its marker.
    let mut prologue: Vec<Instruction<'a>> = vec![
        Instruction::GlobalGet(env.sp),
        Instruction::I32Const(frame_size as i32),
        Instruction::I32Sub,
        Instruction::LocalTee(fp),
        Instruction::GlobalSet(env.sp),
        Instruction::LocalGet(fp),
        Instruction::I32Load(memarg(0, mem)),
        Instruction::I32Const(function as i32),
        Instruction::I32Ne,
        Instruction::If(BlockType::Empty),
        Instruction::Unreachable,
        Instruction::End,
        Instruction::LocalGet(fp),
        Instruction::I32Load(memarg(4, mem)),
        Instruction::LocalSet(resume),
    ];
    for &local in &kept {
        prologue.push(Instruction::LocalGet(fp));
        prologue.push(load(local_type(local), memarg(offsets[&local], mem)));
        prologue.push(Instruction::LocalSet(local));
    }
    let at = emitter
        .marker
        .ok_or_else(|| Refusal::Invalid("prologue marker missing".into()))?;
    let mut out = emitter.out;
    out.splice(at..at, prologue);

    let mut all_locals: Vec<(u32, wasm_encoder::ValType)> = Vec::new();
    for (count, ty) in declared {
        all_locals.push((count, val_type(ty)?));
    }
    all_locals.push((3, wasm_encoder::ValType::I32));
    for ty in &slot_types {
        all_locals.push((1, val_type(*ty)?));
    }
    let mut f = Function::new(all_locals);
    for i in &out {
        f.instruction(i);
    }
    Ok(Some((f.into_raw_body(), analysis.points)))
}
