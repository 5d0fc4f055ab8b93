//! Which locals of a function are live at its unwind points: read on some path from there before they are
//! written. The unwind stage saves only those, at each point, so that saving a frame does not keep alive —
//! in registers or stack slots, across every call — values the function no longer needs; that is what
//! makes rewritten code nearly as fast as the original.
//!
//! A backward dataflow over the structured body: a branch to a block or an `if` continues after its `end`,
//! a branch to a loop at its head, whose live set is found by iterating to a fixed point.

use std::collections::HashMap;

use wasmparser::Operator;

/// A set of local indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Locals {
    words: Vec<u64>,
}

impl Locals {
    fn empty(count: usize) -> Self {
        Self {
            words: vec![0; count.div_ceil(64)],
        }
    }

    fn insert(&mut self, local: u32) {
        if let Some(word) = self.words.get_mut(local as usize / 64) {
            *word |= 1 << (local % 64);
        }
    }

    fn remove(&mut self, local: u32) {
        if let Some(word) = self.words.get_mut(local as usize / 64) {
            *word &= !(1 << (local % 64));
        }
    }

    fn union(&mut self, other: &Self) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    /// The locals in the set, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &bits)| {
            (0..64u32)
                .filter(move |b| bits & (1 << b) != 0)
                .map(move |b| w as u32 * 64 + b)
        })
    }
}

/// A construct seen from its `end`, going backward.
enum Frame {
    /// The function body: a branch to it returns.
    Func,
    /// A block: a branch to it continues after its `end`, with these locals live.
    Block(Locals),
    /// An `if`: likewise, and the live set at the start of its `else` arm once seen.
    If {
        end: Locals,
        otherwise: Option<Locals>,
    },
    /// A loop: a branch to it continues at its head (the loop's operator index).
    Loop(usize),
}

/// For each operator index in `points`, the locals live just after it (for a call: once it returns; for a
/// `loop`: at the head of its body), among `count` locals. `None` for a body that is not well nested.
pub(super) fn live_after(
    ops: &[Operator<'_>],
    count: usize,
    points: &[usize],
) -> Option<HashMap<usize, Locals>> {
    // The operator each `end` closes, found with one forward walk.
    let mut opens = Vec::new();
    let mut open_of_end: HashMap<usize, usize> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        match op {
            Operator::Block { .. } | Operator::Loop { .. } | Operator::If { .. } => opens.push(i),
            Operator::End => {
                if let Some(open) = opens.pop() {
                    open_of_end.insert(i, open);
                }
            }
            _ => {}
        }
    }
    let wanted: std::collections::HashSet<usize> = points.iter().copied().collect();
    let mut heads: HashMap<usize, Locals> = HashMap::new();
    let mut result = HashMap::new();
    // Each pass can only grow the loop heads' sets, so this ends; a pass per nesting level is typical.
    for _ in 0..=ops.len() {
        let mut changed = false;
        let mut cur = Locals::empty(count);
        let mut stack = vec![Frame::Func];
        let label =
            |stack: &[Frame], depth: u32, heads: &HashMap<usize, Locals>| -> Option<Locals> {
                let frame = stack
                    .len()
                    .checked_sub(1 + depth as usize)
                    .map(|i| &stack[i])?;
                Some(match frame {
                    Frame::Func => Locals::empty(count),
                    Frame::Block(end) | Frame::If { end, .. } => end.clone(),
                    Frame::Loop(head) => heads
                        .get(head)
                        .cloned()
                        .unwrap_or_else(|| Locals::empty(count)),
                })
            };
        for i in (0..ops.len()).rev() {
            if wanted.contains(&i) && !matches!(ops[i], Operator::Loop { .. }) {
                result.insert(i, cur.clone());
            }
            match &ops[i] {
                Operator::End if i + 1 == ops.len() => {}
                Operator::End => match ops.get(*open_of_end.get(&i)?)? {
                    Operator::Loop { .. } => stack.push(Frame::Loop(open_of_end[&i])),
                    Operator::If { .. } => stack.push(Frame::If {
                        end: cur.clone(),
                        otherwise: None,
                    }),
                    _ => stack.push(Frame::Block(cur.clone())),
                },
                Operator::Else => {
                    let Some(Frame::If { end, otherwise }) = stack.last_mut() else {
                        return None;
                    };
                    *otherwise = Some(std::mem::replace(&mut cur, end.clone()));
                }
                Operator::Block { .. } => {
                    stack.pop()?;
                }
                Operator::If { .. } => match stack.pop()? {
                    Frame::If { end, otherwise } => cur.union(otherwise.as_ref().unwrap_or(&end)),
                    _ => return None,
                },
                Operator::Loop { .. } => {
                    stack.pop()?;
                    if heads.get(&i) != Some(&cur) {
                        changed = true;
                        heads.insert(i, cur.clone());
                    }
                    if wanted.contains(&i) {
                        result.insert(i, cur.clone());
                    }
                }
                Operator::Br { relative_depth } => cur = label(&stack, *relative_depth, &heads)?,
                Operator::BrIf { relative_depth } => {
                    cur.union(&label(&stack, *relative_depth, &heads)?);
                }
                Operator::BrTable { targets } => {
                    let mut live = label(&stack, targets.default(), &heads)?;
                    for target in targets.targets() {
                        live.union(&label(&stack, target.ok()?, &heads)?);
                    }
                    cur = live;
                }
                Operator::Return | Operator::Unreachable => cur = Locals::empty(count),
                Operator::LocalGet { local_index } => cur.insert(*local_index),
                Operator::LocalSet { local_index } | Operator::LocalTee { local_index } => {
                    cur.remove(*local_index)
                }
                _ => {}
            }
        }
        if !changed {
            return Some(result);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(wat: &str) -> Vec<Operator<'static>> {
        // The last function of the module.
        let wasm: &'static [u8] = Box::leak(wat::parse_str(wat).expect("wat").into_boxed_slice());
        let mut last = None;
        for payload in wasmparser::Parser::new(0).parse_all(wasm) {
            if let Ok(wasmparser::Payload::CodeSectionEntry(body)) = payload {
                let mut reader = body.get_operators_reader().expect("operators");
                let mut out = Vec::new();
                while !reader.eof() {
                    out.push(reader.read().expect("operator"));
                }
                last = Some(out);
            }
        }
        last.expect("a function")
    }

    #[test]
    fn a_local_written_after_a_call_is_dead_there_and_a_loop_keeps_its_reads_alive() {
        // 0 local.get 0, 1 call, 2 drop, 3 i32.const, 4 local.set 1, 5 loop, 6 local.get 1, 7 call, 8 drop,
        // 9 local.get 2, 10 br_if 0, 11 end, 12 end
        let ops = ops("(module (func $f (param i32) (result i32) local.get 0)
               (func (param i32) (local i32 i32)
                 local.get 0 call $f drop
                 i32.const 1 local.set 1
                 loop local.get 1 call $f drop local.get 2 br_if 0 end))");
        let live = live_after(&ops, 3, &[1, 5, 7]).expect("well nested");
        // After the first call, local 1 is written before it is read, local 2 is read in the loop.
        assert_eq!(live[&1].iter().collect::<Vec<_>>(), [2]);
        // At the loop head and after the call in it, locals 1 and 2 are read (the branch goes round again).
        assert_eq!(live[&5].iter().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(live[&7].iter().collect::<Vec<_>>(), [1, 2]);
    }
}
