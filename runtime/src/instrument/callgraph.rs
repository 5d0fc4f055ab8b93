//! Stage 2: which functions the unwind stage rewrites — those on a call path to an unwind point.
//!
//! Unwind points are calls to the imports that may block or that the host wants to suspend at
//! ([`is_unwind_import`]) and, with [`InstrumentOptions::loop_checks`], loop headers. A function can unwind
//! if it has one or calls a function that can; `call_indirect` reaches exactly the functions that active
//! element segments put into tables with the same signature, since tables are immutable in accepted
//! modules. Everything else is copied untouched and costs nothing at run time.

use std::collections::HashMap;

use super::InstrumentOptions;
use super::inspect::{Inspection, Sig};

/// Imports whose calls are unwind points: the WASI calls that wait (for time, input, a peer) or move bytes
/// through a stream the host may want to suspend on, and every import of the `stasis` module.
pub fn is_unwind_import(module: &str, name: &str) -> bool {
    match module {
        "wasi_snapshot_preview1" => matches!(
            name,
            "poll_oneoff"
                | "fd_read"
                | "fd_write"
                | "sched_yield"
                | "sock_accept"
                | "sock_connect"
                | "sock_recv"
                | "sock_send"
        ),
        "stasis" => true,
        _ => false,
    }
}

/// The rewrite plan: for every function (imports first), whether its calls can unwind.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    /// Indexed by function index.
    pub can_unwind: Vec<bool>,
    /// Type indices whose `call_indirect` may reach a function that can unwind.
    pub unwinding_types: Vec<bool>,
    /// Whether loop headers are unwind points.
    pub loop_checks: bool,
}

impl Plan {
    /// Whether no function needs rewriting.
    pub fn is_empty(&self) -> bool {
        self.can_unwind.iter().all(|c| !c)
    }
}

/// Computes the plan, or why the module cannot be made pausable mid-call.
pub(super) fn plan(info: &Inspection<'_>, options: &InstrumentOptions) -> Result<Plan, String> {
    if info.shared_memory {
        return Err(
            "it has a shared memory, which other threads could change while a stack is saved"
                .into(),
        );
    }
    let imported = info.imported_funcs() as usize;
    let total = imported + info.bodies.len();
    // Node ids: functions first, then one node per signature of table functions (what a `call_indirect`
    // of that signature reaches).
    let mut sig_nodes: HashMap<&Sig, usize> = HashMap::new();
    let mut table_by_sig: Vec<Vec<usize>> = Vec::new();
    for &f in &info.table_funcs {
        let Some(sig) = info.func_sig(f) else {
            continue;
        };
        let next = total + table_by_sig.len();
        let node = *sig_nodes.entry(sig).or_insert(next);
        if node == next {
            table_by_sig.push(Vec::new());
        }
        table_by_sig[node - total].push(f as usize);
    }
    let nodes = total + table_by_sig.len();
    let mut callers: Vec<Vec<usize>> = vec![Vec::new(); nodes];
    let sig_node = |ty: u32| -> Option<usize> {
        let sig = info.types.get(ty as usize)?.as_ref()?;
        sig_nodes.get(sig).copied()
    };
    for (group, members) in table_by_sig.iter().enumerate() {
        for &f in members {
            callers[f].push(total + group);
        }
    }
    let mut unwinds = vec![false; nodes];
    let mut work = Vec::new();
    for (f, (module, name)) in info.func_imports.iter().enumerate() {
        if is_unwind_import(module, name) {
            unwinds[f] = true;
            work.push(f);
        }
    }
    for body in &info.bodies {
        let f = body.index as usize;
        for &callee in &body.summary.calls {
            if let Some(list) = callers.get_mut(callee as usize) {
                list.push(f);
            }
        }
        for &ty in &body.summary.indirect {
            if let Some(node) = sig_node(ty) {
                callers[node].push(f);
            }
        }
        if options.loop_checks && body.summary.has_loop && !unwinds[f] {
            unwinds[f] = true;
            work.push(f);
        }
    }
    while let Some(node) = work.pop() {
        for &caller in &callers[node] {
            if !unwinds[caller] {
                unwinds[caller] = true;
                work.push(caller);
            }
        }
    }
    let unwinding_types: Vec<bool> = (0..info.types.len() as u32)
        .map(|ty| sig_node(ty).is_some_and(|n| unwinds[n]))
        .collect();
    let can = |f: u32| unwinds.get(f as usize).copied().unwrap_or(false);
    for body in &info.bodies {
        let s = &body.summary;
        let tail = s.tail_calls.iter().any(|&f| can(f))
            || s.tail_indirect
                .iter()
                .any(|&t| unwinding_types.get(t as usize).copied().unwrap_or(false));
        if tail {
            return Err(format!(
                "function {} tail-calls a function that can unwind, and a tail call leaves no frame to save",
                body.index
            ));
        }
        if can(body.index)
            && let Some(what) = s.unrewritable
        {
            return Err(format!(
                "function {} is on a path to an unwind point and uses {what}",
                body.index
            ));
        }
        // A `call_ref` may reach any function of its type, including ones that can unwind through it.
        for &ty in &s.call_refs {
            let sig = info.types.get(ty as usize).and_then(|s| s.as_ref());
            let reaches = (0..total as u32).any(|f| can(f) && info.func_sig(f) == sig);
            if reaches {
                return Err(format!(
                    "function {} uses `call_ref` with the type of a function that can unwind",
                    body.index
                ));
            }
        }
    }
    if info.gc_types && unwinds.iter().any(|u| *u) {
        return Err("it uses GC types".into());
    }
    Ok(Plan {
        can_unwind: unwinds[..total].to_vec(),
        unwinding_types,
        loop_checks: options.loop_checks,
    })
}
