//! The kernel's process table: the child processes a sandbox's processes started — parent, program,
//! argv, working directory — and, once they end, their exit status until the parent reaps it.
//!
//! A child whose parent ends first is an orphan: no one will wait for it, so it leaves the table as soon
//! as it ends (there is no `init` to reap it).

use std::collections::BTreeMap;

use crate::running::Control;
use crate::state::ChildSaved;
use crate::wasi::process::Reaped;

/// One child process.
pub(crate) struct Child {
    /// Its parent's pid; 0 once the parent has ended.
    pub ppid: u32,
    /// The program it runs, as looked up.
    pub program: String,
    /// Its argv.
    pub args: Vec<String>,
    /// Its working directory, when its parent gave one.
    pub cwd: Option<String>,
    /// Running, or ended and not reaped yet.
    pub state: ChildState,
}

/// Where a child is.
pub(crate) enum ChildState {
    /// Running on a thread of its own (or parked by a pause).
    Running(Control),
    /// Brought back suspended by a resume, held by the sandbox until it continues
    /// ([`crate::Sandbox::continue_children`]).
    Suspended,
    /// Ended with this status; waiting for its parent to reap it.
    Exited(i32),
}

/// What [`Table::reap`] found.
pub(crate) enum Reap {
    /// A child had ended: it is gone from the table now.
    Ended(Reaped),
    /// Matching children exist but all still run.
    Running,
    /// No child matches.
    NoChild,
}

/// The children of a sandbox's processes, by pid.
#[derive(Default)]
pub(crate) struct Table {
    children: BTreeMap<u32, Child>,
}

impl Table {
    /// How many children are in the table, running or not reaped.
    pub(crate) fn len(&self) -> usize {
        self.children.len()
    }

    /// Adds a child that has just started.
    pub(crate) fn insert(&mut self, pid: u32, child: Child) {
        self.children.insert(pid, child);
    }

    /// Records that child `pid` ended with `status`; an orphan leaves the table at once.
    pub(crate) fn exited(&mut self, pid: u32, status: i32) {
        let orphan = match self.children.get_mut(&pid) {
            Some(child) => {
                child.state = ChildState::Exited(status);
                child.ppid == 0
            }
            None => false,
        };
        if orphan {
            self.children.remove(&pid);
        }
        self.orphan(pid);
    }

    /// Makes the children of `parent` (which ended) orphans, dropping those that ended already.
    pub(crate) fn orphan(&mut self, parent: u32) {
        self.children.retain(|_, child| {
            if child.ppid != parent {
                return true;
            }
            child.ppid = 0;
            !matches!(child.state, ChildState::Exited(_))
        });
    }

    /// Child `pid`, suspended, continues under `control`; false when it is not a suspended child.
    pub(crate) fn continued(&mut self, pid: u32, control: Control) -> bool {
        match self.children.get_mut(&pid) {
            Some(child) if matches!(child.state, ChildState::Suspended) => {
                child.state = ChildState::Running(control);
                true
            }
            _ => false,
        }
    }

    /// The pids of the suspended children, in order.
    pub(crate) fn suspended(&self) -> Vec<u32> {
        self.children
            .iter()
            .filter(|(_, c)| matches!(c.state, ChildState::Suspended))
            .map(|(&pid, _)| pid)
            .collect()
    }

    /// The table as saved: running children (which a pause suspends) and ended ones with their status.
    pub(crate) fn save(&self) -> Vec<ChildSaved> {
        self.children
            .iter()
            .map(|(&pid, c)| ChildSaved {
                pid,
                ppid: c.ppid,
                program: c.program.clone(),
                args: c.args.clone(),
                cwd: c.cwd.clone(),
                exited: match c.state {
                    ChildState::Exited(status) => Some(status),
                    ChildState::Running(_) | ChildState::Suspended => None,
                },
            })
            .collect()
    }

    /// The table of a restored sandbox: its children that had not ended are suspended.
    pub(crate) fn restore(saved: &[ChildSaved]) -> Self {
        Self {
            children: saved
                .iter()
                .map(|c| {
                    let child = Child {
                        ppid: c.ppid,
                        program: c.program.clone(),
                        args: c.args.clone(),
                        cwd: c.cwd.clone(),
                        state: c.exited.map_or(ChildState::Suspended, ChildState::Exited),
                    };
                    (c.pid, child)
                })
                .collect(),
        }
    }

    /// Reaps an ended child of `parent`: `pid`, or the lowest-numbered one when `None`.
    pub(crate) fn reap(&mut self, parent: u32, pid: Option<u32>) -> Reap {
        let mut any = false;
        let mut ended = None;
        for (&id, child) in &self.children {
            if child.ppid != parent || pid.is_some_and(|p| p != id) {
                continue;
            }
            any = true;
            if let ChildState::Exited(status) = child.state {
                ended = Some(Reaped { pid: id, status });
                break;
            }
        }
        match ended {
            Some(reaped) => {
                self.children.remove(&reaped.pid);
                Reap::Ended(reaped)
            }
            None if any => Reap::Running,
            None => Reap::NoChild,
        }
    }

    /// The control of running child `pid`.
    pub(crate) fn control(&self, pid: u32) -> Option<&Control> {
        match &self.children.get(&pid)?.state {
            ChildState::Running(control) => Some(control),
            ChildState::Suspended | ChildState::Exited(_) => None,
        }
    }

    /// Every child, in pid order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &Child)> {
        self.children.iter().map(|(&pid, child)| (pid, child))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(ppid: u32, status: i32) -> Child {
        Child {
            ppid,
            program: "p".into(),
            args: vec!["p".into()],
            cwd: None,
            state: ChildState::Exited(status),
        }
    }

    #[test]
    fn a_parent_reaps_only_its_own_children_once() {
        let mut table = Table::default();
        table.insert(5, exited(1, 3));
        table.insert(6, exited(2, 4));
        assert!(matches!(table.reap(1, Some(6)), Reap::NoChild));
        assert!(matches!(
            table.reap(1, None),
            Reap::Ended(Reaped { pid: 5, status: 3 })
        ));
        assert!(matches!(table.reap(1, None), Reap::NoChild));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn the_table_saves_and_restores_with_running_children_suspended() {
        let mut table = Table::default();
        table.insert(5, exited(1, 3));
        table.insert(
            6,
            Child {
                state: ChildState::Suspended,
                ..exited(1, 0)
            },
        );
        let saved = table.save();
        assert_eq!(saved[0].exited, Some(3));
        assert_eq!(saved[1].exited, None);
        let back = Table::restore(&saved);
        assert_eq!(back.save(), saved);
        assert_eq!(back.suspended(), [6]);
    }

    #[test]
    fn the_children_of_an_ended_parent_that_ended_too_leave_the_table() {
        let mut table = Table::default();
        table.insert(5, exited(1, 0));
        table.insert(6, exited(5, 0));
        table.exited(5, 0);
        assert!(matches!(table.reap(5, None), Reap::NoChild));
        assert_eq!(table.len(), 1, "only 5 itself, waiting for 1");
        table.orphan(1);
        assert_eq!(table.len(), 0);
    }
}
