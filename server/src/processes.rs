//! The running commands of every sandbox, as envd's `process.Process` service sees them: a pid, an
//! optional tag, the config it was started with, the control that stops it and writes its stdin, and the
//! streams attached to it (the `Start` call's, and any `Connect` call's).
//!
//! A command's output is published to every attached stream as it is written (unbounded channels, so the
//! guest never waits for a slow client; what one command can publish is bounded by the sandbox's output
//! limit). A stream whose client went away is dropped at the next event; the command carries on, as envd's
//! do. A command leaves the table *before* its end event is published, so a client that saw the end never
//! finds it listed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use stasis::CommandControl;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// One event of a running command, as streamed to clients.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Bytes written to stdout.
    Stdout(Vec<u8>),
    /// Bytes written to stderr.
    Stderr(Vec<u8>),
    /// Bytes shown on the process's terminal (its output and the echo of what was typed), for a process
    /// started with a PTY.
    Pty(Vec<u8>),
    /// The command ended: the `end` event's JSON body.
    End(serde_json::Value),
    /// The stream ends without the command having ended (its sandbox was paused: the command was saved
    /// with it and continues after the resume), with this explanation.
    Interrupted(String),
}

/// Where a command's events go: the streams attached to it.
#[derive(Debug, Default)]
pub struct Hub {
    state: Mutex<HubState>,
}

#[derive(Debug, Default)]
struct HubState {
    subscribers: Vec<UnboundedSender<Event>>,
    ended: bool,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attaches a new stream: every event from now on. `None` once the command has ended.
    pub fn subscribe(&self) -> Option<UnboundedReceiver<Event>> {
        let mut state = self.lock();
        if state.ended {
            return None;
        }
        let (tx, rx) = unbounded_channel();
        state.subscribers.push(tx);
        Some(rx)
    }

    /// Sends `event` to every attached stream, forgetting those whose client went away.
    pub fn publish(&self, event: Event) {
        self.lock()
            .subscribers
            .retain(|tx| tx.send(event.clone()).is_ok());
    }

    /// Publishes the end event and detaches every stream.
    pub fn finish(&self, end: serde_json::Value) {
        self.close_with(Event::End(end));
    }

    /// Ends every stream with an error, the command not ended (see [`Event::Interrupted`]).
    pub fn interrupt(&self, why: &str) {
        self.close_with(Event::Interrupted(why.to_owned()));
    }

    fn close_with(&self, last: Event) {
        let mut state = self.lock();
        state.ended = true;
        for tx in state.subscribers.drain(..) {
            let _ = tx.send(last.clone());
        }
    }
}

/// A running command.
#[derive(Debug)]
pub struct Entry {
    /// Its pid, unique for the server's life.
    pub pid: u32,
    /// The tag the client gave it.
    pub tag: Option<String>,
    /// `ProcessConfig` as started: `cmd`, `args`, `envs`, `cwd`.
    pub config: serde_json::Value,
    /// Stops it; holds its stdin pipe when it was started with one.
    pub control: CommandControl,
    /// Its attached streams.
    pub hub: Arc<Hub>,
    /// Its terminal, when it was started with a PTY (its stdin is then the terminal's input).
    pub pty: Option<Arc<crate::pty::Pty>>,
}

/// How a client names a process: `{"pid": N}` or `{"tag": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// By pid.
    Pid(u32),
    /// By tag.
    Tag(String),
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pid(pid) => write!(f, "pid {pid}"),
            Self::Tag(tag) => write!(f, "tag {tag:?}"),
        }
    }
}

/// The running commands of each sandbox, by sandbox id and pid.
type Processes = HashMap<String, BTreeMap<u32, Arc<Entry>>>;

/// Every sandbox's running commands. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ProcessTable {
    sandboxes: Arc<Mutex<Processes>>,
}

impl ProcessTable {
    fn lock(&self) -> MutexGuard<'_, Processes> {
        self.sandboxes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a command started in `sandbox`.
    pub fn insert(&self, sandbox: &str, entry: Entry) {
        self.lock()
            .entry(sandbox.to_owned())
            .or_default()
            .insert(entry.pid, Arc::new(entry));
    }

    /// Forgets a command that ended.
    pub fn remove(&self, sandbox: &str, pid: u32) {
        self.remove_if(sandbox, pid, |_| true);
    }

    /// Forgets the command `pid` of `sandbox` if it is the one whose events go to `hub`: a command
    /// suspended by a pause leaves the table, and must not take with it the same pid registered again by a
    /// resume that came first.
    pub fn remove_run(&self, sandbox: &str, pid: u32, hub: &Arc<Hub>) {
        self.remove_if(sandbox, pid, |e| Arc::ptr_eq(&e.hub, hub));
    }

    fn remove_if(&self, sandbox: &str, pid: u32, matches: impl Fn(&Entry) -> bool) {
        let mut all = self.lock();
        if let Some(processes) = all.get_mut(sandbox) {
            if processes.get(&pid).is_some_and(|e| matches(e)) {
                processes.remove(&pid);
            }
            if processes.is_empty() {
                all.remove(sandbox);
            }
        }
    }

    /// Forgets every command of `sandbox` (it was killed or paused without them).
    pub fn forget_sandbox(&self, sandbox: &str) {
        self.lock().remove(sandbox);
    }

    /// The running commands of `sandbox`, by pid.
    pub fn list(&self, sandbox: &str) -> Vec<Arc<Entry>> {
        self.lock()
            .get(sandbox)
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The running command of `sandbox` that `selector` names.
    pub fn find(&self, sandbox: &str, selector: &Selector) -> Option<Arc<Entry>> {
        let all = self.lock();
        let processes = all.get(sandbox)?;
        match selector {
            Selector::Pid(pid) => processes.get(pid).cloned(),
            Selector::Tag(tag) => processes
                .values()
                .find(|e| e.tag.as_deref() == Some(tag))
                .cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_get_events_until_the_end_and_none_after() {
        let hub = Hub::default();
        let mut a = hub.subscribe().expect("running");
        hub.publish(Event::Stdout(b"x".to_vec()));
        let mut b = hub.subscribe().expect("running");
        hub.finish(serde_json::json!({"exitCode": 0}));
        assert_eq!(a.try_recv().ok(), Some(Event::Stdout(b"x".to_vec())));
        assert!(matches!(a.try_recv(), Ok(Event::End(_))));
        assert!(matches!(b.try_recv(), Ok(Event::End(_))));
        assert!(hub.subscribe().is_none());
    }

    #[test]
    fn an_interrupted_command_ends_its_streams_without_an_end_event() {
        let hub = Hub::default();
        let mut a = hub.subscribe().expect("running");
        hub.interrupt("paused");
        assert_eq!(a.try_recv().ok(), Some(Event::Interrupted("paused".into())));
        assert!(hub.subscribe().is_none());
    }

    #[test]
    fn a_gone_client_is_forgotten() {
        let hub = Hub::default();
        drop(hub.subscribe());
        hub.publish(Event::Stderr(b"y".to_vec()));
        assert!(hub.lock().subscribers.is_empty());
    }
}
