//! A sandbox's own log: what happened to it (created, paused, resumed, timed out) and in it (commands
//! started and ended), as E2B's sandbox logs report them. One JSON line per event in `boxes/<id>/events.jsonl`,
//! next to the sandbox's record, so it survives pauses and server restarts and goes when the sandbox is
//! killed.
//!
//! The file is bounded: past [`MAX_LOG_BYTES`] the oldest half of it is dropped (rewritten atomically).
//! Appends from every thread of the process go through one lock; events are rare next to the work they
//! describe.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::store::write_atomic;

/// Largest log file; past it the oldest half is dropped.
pub const MAX_LOG_BYTES: u64 = 1 << 20;
/// Name of the log in a sandbox's directory.
pub const LOG_FILE: &str = "events.jsonl";
/// Longest message or field value kept; longer ones are cut.
pub const MAX_TEXT: usize = 1024;

/// How much an event matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Detail.
    Debug,
    /// Something happened.
    Info,
    /// Something went wrong for the sandbox's code (a command failed).
    Warn,
    /// Something went wrong for the sandbox itself.
    Error,
}

impl Level {
    /// The level as E2B spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// One event of a sandbox's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened (ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// How much it matters.
    pub level: Level,
    /// What happened, for people.
    pub message: String,
    /// What happened, for programs: `event` names the kind (`created`, `command_started`, …).
    pub fields: BTreeMap<String, String>,
}

impl Event {
    /// An event of kind `kind` happening now.
    pub fn now(level: Level, kind: &str, message: impl Into<String>) -> Self {
        let mut fields = BTreeMap::new();
        fields.insert("event".to_owned(), kind.to_owned());
        Self {
            timestamp_ms: super::record::now_ms(),
            level,
            message: cut(message.into()),
            fields,
        }
    }

    /// The event with one more field.
    pub fn with(mut self, name: &str, value: impl ToString) -> Self {
        self.fields.insert(name.to_owned(), cut(value.to_string()));
        self
    }
}

fn cut(mut text: String) -> String {
    if text.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Serializes appends (and the trims they trigger) across the process, and a sandbox directory's removal
/// with them ([`exclusive`]).
static APPENDS: Mutex<()> = Mutex::new(());

/// Runs `work` (removing a sandbox's directory) while no event is being appended: an append that raced a
/// removal would create the log again in a directory half removed, and the removal would fail.
pub fn exclusive<R>(work: impl FnOnce() -> R) -> R {
    let _guard = APPENDS.lock().unwrap_or_else(|e| e.into_inner());
    work()
}

/// Appends `event` to the log in `sandbox_dir`. A sandbox directory that is gone (the sandbox was killed
/// meanwhile) takes no events.
pub fn append(sandbox_dir: &Path, event: &Event) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let _guard = APPENDS.lock().unwrap_or_else(|e| e.into_inner());
    let path = sandbox_dir.join(LOG_FILE);
    let mut file = match std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    file.write_all(&line)?;
    if file.metadata()?.len() > MAX_LOG_BYTES {
        drop(file);
        let all = std::fs::read(&path)?;
        // Keep the newest half, from a line boundary.
        let from = all.len() / 2;
        let start = all[from..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(all.len(), |i| from + i + 1);
        write_atomic(&path, &all[start..])?;
    }
    Ok(())
}

/// The log of one sandbox, for whoever writes events into it without the manager at hand (a command's
/// thread). Cheap to clone.
#[derive(Debug, Clone)]
pub struct SandboxLog {
    dir: std::path::PathBuf,
}

impl SandboxLog {
    /// The log kept in `sandbox_dir`.
    pub fn new(sandbox_dir: std::path::PathBuf) -> Self {
        Self { dir: sandbox_dir }
    }

    /// Appends `event`; a log that cannot be written loses the event, never the work it describes (the
    /// failure goes to the server's log).
    pub fn append(&self, event: &Event) {
        if let Err(error) = append(&self.dir, event) {
            tracing::warn!(dir = %self.dir.display(), %error, "a sandbox event could not be logged");
        }
    }
}

/// Every event of the log in `sandbox_dir`, oldest first; lines that do not parse are skipped.
pub fn read(sandbox_dir: &Path) -> std::io::Result<Vec<Event>> {
    match std::fs::read(sandbox_dir.join(LOG_FILE)) {
        Ok(bytes) => Ok(bytes
            .split(|&b| b == b'\n')
            .filter_map(|line| serde_json::from_slice(line).ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_the_log_stays_bounded() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let first = Event::now(Level::Info, "created", "Sandbox created").with("template", "base");
        append(dir.path(), &first)?;
        assert_eq!(read(dir.path())?, vec![first]);
        let big = "x".repeat(MAX_TEXT * 4);
        for i in 0..2000 {
            append(
                dir.path(),
                &Event::now(Level::Debug, "filler", &big).with("i", i),
            )?;
        }
        assert!(std::fs::metadata(dir.path().join(LOG_FILE))?.len() <= MAX_LOG_BYTES + 2048);
        let events = read(dir.path())?;
        assert_eq!(events.last().map(|e| e.fields["i"].as_str()), Some("1999"));
        assert!(events.iter().all(|e| e.message.len() <= MAX_TEXT));
        // A killed sandbox's directory is gone: nothing is written, nothing fails.
        append(&dir.path().join("gone"), &Event::now(Level::Info, "x", "y"))?;
        assert!(!dir.path().join("gone").exists());
        Ok(())
    }
}
