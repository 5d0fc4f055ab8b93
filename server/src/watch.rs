//! Filesystem watchers (envd's `WatchDir` stream and its `CreateWatcher`/`GetWatcherEvents`/`RemoveWatcher`
//! calls): what changed in a directory of a sandbox, named by path relative to that directory, as the
//! guest sees it.
//!
//! A sandbox's directory is an ordinary host directory, so a watcher compares snapshots of the watched
//! tree (each entry's kind, inode, size, modification time and mode), taken at [`POLL_INTERVAL`] and
//! whenever events are asked for: robust (no kernel watch limits, directories created later are watched
//! too), and every path comes out relative to the watched directory. The walk goes through a capability
//! on the watched directory, never follows symlinks and is bounded to [`MAX_ENTRIES`]. What a snapshot
//! comparison cannot see: a file created and removed between two snapshots.
//!
//! Events follow inotify's as envd reports them: a new file is `CREATE` (and `WRITE` when it has content),
//! a changed one `WRITE`, a mode change `CHMOD`, a file gone `REMOVE`, a file moved `RENAME` under its old
//! name and `CREATE` under its new one. A watcher ends when its sandbox pauses (its directory goes into
//! the blob) or is killed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use cap_std::fs::{Dir, Metadata, MetadataExt, PermissionsExt};

/// How often a watcher compares its tree.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Most entries one comparison walks; past it the rest of the tree is not watched.
pub const MAX_ENTRIES: usize = 100_000;
/// Most events a `CreateWatcher` watcher keeps between two `GetWatcherEvents`; older ones are dropped.
pub const MAX_PENDING: usize = 10_000;
/// Most watchers of one sandbox.
pub const MAX_PER_SANDBOX: usize = 32;

/// What happened to an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventKind {
    /// It appeared.
    Create,
    /// Its content changed.
    Write,
    /// It went away.
    Remove,
    /// It was moved away (its new name gets a `Create`).
    Rename,
    /// Its mode changed.
    Chmod,
}

impl EventKind {
    /// The kind as envd's `EventType` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "EVENT_TYPE_CREATE",
            Self::Write => "EVENT_TYPE_WRITE",
            Self::Remove => "EVENT_TYPE_REMOVE",
            Self::Rename => "EVENT_TYPE_RENAME",
            Self::Chmod => "EVENT_TYPE_CHMOD",
        }
    }
}

/// One event: the path relative to the watched directory, what happened, and (when asked for and the
/// entry still exists) its `EntryInfo`.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    /// The path relative to the watched directory (`sub/file.txt`).
    pub name: String,
    /// What happened.
    pub kind: EventKind,
    /// The entry's `EntryInfo`, when the watcher includes entries.
    pub entry: Option<serde_json::Value>,
}

impl WatchEvent {
    /// The event as envd's `FilesystemEvent` JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let mut event = serde_json::json!({ "name": self.name, "type": self.kind.as_str() });
        if let Some(entry) = &self.entry {
            event["entry"] = entry.clone();
        }
        event
    }
}

/// What a comparison looks at of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Node {
    dir: bool,
    ino: u64,
    size: u64,
    modified: Option<SystemTime>,
    mode: u32,
}

type Tree = BTreeMap<PathBuf, Node>;

/// Why a watcher could not be created or read.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The sandbox has [`MAX_PER_SANDBOX`] watchers already.
    #[error("the sandbox already has {MAX_PER_SANDBOX} watchers; remove one first")]
    TooMany,
    /// No watcher with this id in this sandbox.
    #[error("watcher {0} not found")]
    NotFound(String),
    /// The watcher ended because its sandbox paused or was killed.
    #[error("watcher {0} ended: its sandbox was paused or killed; watch again after resuming it")]
    Ended(String),
}

/// One watched directory.
pub struct Watcher {
    /// The watcher's id.
    pub id: String,
    /// The sandbox it watches in.
    pub sandbox: String,
    /// When that sandbox last started running: a different time means it paused since.
    pub started_at: SystemTime,
    state: Mutex<WatchState>,
    ended: AtomicBool,
}

struct WatchState {
    dir: Dir,
    /// The watched directory's absolute guest path, for the entries' `path`.
    shown: String,
    recursive: bool,
    include_entry: bool,
    tree: Tree,
    /// Events not yet taken (`CreateWatcher` watchers).
    pending: VecDeque<WatchEvent>,
}

impl Watcher {
    /// A watcher of `dir` (shown to the guest as `shown`), with its first snapshot taken.
    pub fn new(
        sandbox: String,
        started_at: SystemTime,
        dir: Dir,
        shown: String,
        recursive: bool,
        include_entry: bool,
    ) -> Self {
        let tree = scan(&dir, recursive);
        Self {
            id: stasis::lifecycle::id::new_id("w_"),
            sandbox,
            started_at,
            state: Mutex::new(WatchState {
                dir,
                shown,
                recursive,
                include_entry,
                tree,
                pending: VecDeque::new(),
            }),
            ended: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Compares the tree with the previous snapshot and returns what changed (blocking: it walks the
    /// tree).
    pub fn poll(&self) -> Vec<WatchEvent> {
        let mut state = self.lock();
        let now = scan(&state.dir, state.recursive);
        let events = diff(&state.tree, &now, |path| {
            state
                .include_entry
                .then(|| entry_info(&state.dir, path, &state.shown))
                .flatten()
        });
        state.tree = now;
        events
    }

    /// [`Watcher::poll`], keeping the events for [`Watcher::take`] (at most [`MAX_PENDING`]).
    pub fn poll_pending(&self) {
        let events = self.poll();
        let mut state = self.lock();
        state.pending.extend(events);
        let excess = state.pending.len().saturating_sub(MAX_PENDING);
        state.pending.drain(..excess);
    }

    /// The events kept since the previous call.
    pub fn take(&self) -> Vec<WatchEvent> {
        self.lock().pending.drain(..).collect()
    }

    /// Marks the watcher ended.
    pub fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
    }

    /// Whether the watcher has ended.
    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }
}

/// The `CreateWatcher` watchers of every sandbox, by id.
#[derive(Default)]
pub struct Watchers {
    all: Mutex<HashMap<String, Arc<Watcher>>>,
}

impl Watchers {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Watcher>>> {
        self.all.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `watcher`, unless its sandbox has [`MAX_PER_SANDBOX`] live ones already. Ended watchers
    /// (their sandbox paused or was killed) are forgotten here, so they never pile up.
    pub fn insert(&self, watcher: Arc<Watcher>) -> Result<(), WatchError> {
        let mut all = self.lock();
        all.retain(|_, w| !w.is_ended());
        if all
            .values()
            .filter(|w| w.sandbox == watcher.sandbox)
            .count()
            >= MAX_PER_SANDBOX
        {
            return Err(WatchError::TooMany);
        }
        all.insert(watcher.id.clone(), watcher);
        Ok(())
    }

    /// Watcher `id` of `sandbox`.
    pub fn get(&self, sandbox: &str, id: &str) -> Result<Arc<Watcher>, WatchError> {
        self.lock()
            .get(id)
            .filter(|w| w.sandbox == sandbox)
            .cloned()
            .ok_or_else(|| WatchError::NotFound(id.to_owned()))
    }

    /// Removes watcher `id` of `sandbox`, ending it.
    pub fn remove(&self, sandbox: &str, id: &str) -> Result<(), WatchError> {
        let mut all = self.lock();
        match all.get(id) {
            Some(w) if w.sandbox == sandbox => {
                w.end();
                all.remove(id);
                Ok(())
            }
            _ => Err(WatchError::NotFound(id.to_owned())),
        }
    }

    /// How many live watchers `sandbox` has.
    pub fn count(&self, sandbox: &str) -> usize {
        self.lock()
            .values()
            .filter(|w| w.sandbox == sandbox && !w.is_ended())
            .count()
    }
}

/// Every entry under `dir` (only its own entries unless `recursive`), by path relative to it.
fn scan(dir: &Dir, recursive: bool) -> Tree {
    let mut tree = Tree::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        let listing = if relative.as_os_str().is_empty() {
            dir.entries()
        } else {
            dir.read_dir(&relative)
        };
        let Ok(listing) = listing else { continue };
        for entry in listing.flatten() {
            if tree.len() >= MAX_ENTRIES {
                return tree;
            }
            let path = relative.join(entry.file_name());
            let Ok(meta) = dir.symlink_metadata(&path) else {
                continue;
            };
            let node = node(&meta);
            if node.dir && recursive {
                stack.push(path.clone());
            }
            tree.insert(path, node);
        }
    }
    tree
}

fn node(meta: &Metadata) -> Node {
    Node {
        dir: meta.is_dir(),
        ino: meta.ino(),
        size: if meta.is_dir() { 0 } else { meta.len() },
        modified: meta.modified().ok().map(|t| t.into_std()),
        mode: meta.permissions().mode() & 0o7777,
    }
}

/// What changed from `old` to `new`, in path order; `entry` gives an entry's `EntryInfo`.
fn diff(
    old: &Tree,
    new: &Tree,
    entry: impl Fn(&Path) -> Option<serde_json::Value>,
) -> Vec<WatchEvent> {
    let name = |path: &Path| path.to_string_lossy().into_owned();
    let event = |path: &Path, kind: EventKind| WatchEvent {
        name: name(path),
        kind,
        entry: match kind {
            EventKind::Remove | EventKind::Rename => None,
            _ => entry(path),
        },
    };
    // Inodes that appeared at a new path: a path that lost one of them was renamed, not removed.
    let appeared: HashMap<u64, &PathBuf> = new
        .iter()
        .filter(|(path, node)| old.get(*path).is_none_or(|o| o.ino != node.ino))
        .map(|(path, node)| (node.ino, path))
        .collect();
    let mut events = Vec::new();
    for (path, before) in old {
        match new.get(path) {
            Some(after) if after.ino == before.ino => {
                if !after.dir && (after.size != before.size || after.modified != before.modified) {
                    events.push(event(path, EventKind::Write));
                }
                if after.mode != before.mode {
                    events.push(event(path, EventKind::Chmod));
                }
            }
            // Replaced by another file (e.g. renamed over): the new one is created below.
            Some(_) => {}
            None if appeared.contains_key(&before.ino) => {
                events.push(event(path, EventKind::Rename));
            }
            None => events.push(event(path, EventKind::Remove)),
        }
    }
    for (path, after) in new {
        if old.get(path).is_none_or(|o| o.ino != after.ino) {
            events.push(event(path, EventKind::Create));
            if !after.dir && after.size > 0 {
                events.push(event(path, EventKind::Write));
            }
        }
    }
    events
}

/// The `EntryInfo` of `relative` under `dir`, if it still exists.
fn entry_info(dir: &Dir, relative: &Path, shown: &str) -> Option<serde_json::Value> {
    let meta = dir.symlink_metadata(relative).ok()?;
    let shown = format!(
        "{}/{}",
        shown.trim_end_matches('/'),
        relative.to_string_lossy()
    );
    Some(crate::api::envd::filesystem::entry(
        dir, relative, &shown, &meta,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &Path) -> Dir {
        Dir::open_ambient_dir(path, cap_std::ambient_authority()).expect("dir")
    }

    fn kinds(events: &[WatchEvent]) -> Vec<(String, EventKind)> {
        events.iter().map(|e| (e.name.clone(), e.kind)).collect()
    }

    #[test]
    fn creates_writes_renames_chmods_and_removes_are_told_apart() -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir()?;
        std::fs::write(tmp.path().join("kept"), b"1")?;
        let watcher = Watcher::new(
            "s".into(),
            SystemTime::UNIX_EPOCH,
            open(tmp.path()),
            "/w".into(),
            true,
            true,
        );
        std::fs::create_dir(tmp.path().join("sub"))?;
        std::fs::write(tmp.path().join("sub/new.txt"), b"hello")?;
        std::fs::write(tmp.path().join("empty"), b"")?;
        let events = watcher.poll();
        assert_eq!(
            kinds(&events),
            vec![
                ("empty".into(), EventKind::Create),
                ("sub".into(), EventKind::Create),
                ("sub/new.txt".into(), EventKind::Create),
                ("sub/new.txt".into(), EventKind::Write),
            ]
        );
        assert_eq!(
            events[2].entry.as_ref().map(|e| e["path"].clone()),
            Some("/w/sub/new.txt".into())
        );
        std::fs::write(tmp.path().join("kept"), b"12")?;
        std::fs::set_permissions(
            tmp.path().join("empty"),
            std::fs::Permissions::from_mode(0o600),
        )?;
        std::fs::rename(tmp.path().join("sub/new.txt"), tmp.path().join("moved.txt"))?;
        assert_eq!(
            kinds(&watcher.poll()),
            vec![
                ("empty".into(), EventKind::Chmod),
                ("kept".into(), EventKind::Write),
                ("sub/new.txt".into(), EventKind::Rename),
                ("moved.txt".into(), EventKind::Create),
                ("moved.txt".into(), EventKind::Write),
            ]
        );
        std::fs::remove_file(tmp.path().join("kept"))?;
        assert_eq!(
            kinds(&watcher.poll()),
            vec![("kept".into(), EventKind::Remove)]
        );
        assert!(watcher.poll().is_empty());
        Ok(())
    }

    #[test]
    fn a_flat_watcher_sees_only_its_own_entries() -> std::io::Result<()> {
        let tmp = tempfile::tempdir()?;
        std::fs::create_dir(tmp.path().join("sub"))?;
        let watcher = Watcher::new(
            "s".into(),
            SystemTime::UNIX_EPOCH,
            open(tmp.path()),
            "/".into(),
            false,
            false,
        );
        std::fs::write(tmp.path().join("sub/deep"), b"x")?;
        std::fs::write(tmp.path().join("top"), b"x")?;
        assert_eq!(
            kinds(&watcher.poll()),
            vec![
                ("top".into(), EventKind::Create),
                ("top".into(), EventKind::Write)
            ]
        );
        Ok(())
    }
}
