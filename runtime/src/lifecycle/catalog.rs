//! The durable index of the sandboxes' records, so that opening a data directory reads two files rather
//! than one per sandbox: a snapshot of every record and a journal of the changes since (their format is
//! in [`super::journal`]), loaded into the in-memory [`Index`] that answers every read.
//!
//! **The journal is the source of truth** for which sandboxes exist and what their records say; the
//! per-sandbox `record.json` files are a copy, read only to rebuild the index when it is missing (a new
//! data directory, or one written before the index existed) or damaged (a checksum, a frame, a
//! generation that does not match: never trusted silently). A change is made in this order:
//!
//! 1. append it to the journal and sync it — from here on, a start finds it;
//! 2. publish it to the in-memory index (both under the journal's lock, so the index is always the
//!    snapshot plus the journal, in the journal's order);
//! 3. write the record file (outside the lock, so the record files of different sandboxes are written
//!    in parallel); if that fails, the change is undone in the journal, so a failed operation leaves no
//!    trace.
//!
//! The caller acknowledges the operation only after all three, so the record files hold every
//! acknowledged change too, and may lag the journal only by the one change a crash interrupted, which
//! was never acknowledged. So a rebuild from the record files loses nothing acknowledged either. A kill
//! deletes the record file *first*, then appends its removal: a crash in between leaves a sandbox the
//! journal still has (its blob is intact: the kill was not acknowledged), and a rebuild never brings back
//! a sandbox whose kill was acknowledged.
//!
//! A record written after the snapshot is found because it is in a journal after the snapshot: the
//! snapshot of generation `g` holds everything before `journal-g`, and a start replays `journal-g`,
//! `journal-g+1`, … (the last one's torn tail, an append a crash cut short, dropped). A compaction
//! (1) creates `journal-g+1` and switches appends to it, taking the index's entries at that instant,
//! (2) writes the snapshot of generation `g+1` atomically, (3) deletes the journals before `g+1`; a crash
//! at any step leaves a snapshot and a contiguous run of journals that together hold everything. It runs
//! once the journal holds as many changes as there are sandboxes (at least [`MIN_COMPACTION`]), so its
//! cost is constant per change on average, and a start replays at most about as much as it loads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock};

use super::index::{Entry, Index, IndexPage};
use super::journal::{
    self, Change, Frame, IndexError, JournalWriter, SNAPSHOT_FILE, journal_generation, journal_path,
};
use super::query::{Key, ListQuery};
use super::record::{SandboxInfo, SandboxRecord, SandboxState};
use super::store::{DurableStore, Unreadable, remove_dir_if_present};

/// The journal is compacted after at least this many changes, however few sandboxes there are.
pub const MIN_COMPACTION: usize = 4096;

/// What opening the index found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexReport {
    /// Why the index was rebuilt from the sandboxes' record files (it was missing, or what was damaged
    /// in it); `None` when it was loaded.
    pub rebuilt: Option<String>,
    /// A change cut short at the end of the journal by a crash during its write, dropped: its operation
    /// was never acknowledged.
    pub torn_tail: Option<String>,
    /// Records read from the snapshot (or from the record files, when rebuilt).
    pub loaded: usize,
    /// Changes replayed from the journals after the snapshot.
    pub replayed: usize,
}

/// The durable index: the in-memory index, and the journal that makes each change to it durable.
pub(crate) struct Catalog {
    store: DurableStore,
    dir: PathBuf,
    index: RwLock<Index>,
    journal: Mutex<JournalWriter>,
    /// Compact after this many changes; `None` for the automatic rule (see the module doc).
    compact_after: Option<usize>,
    /// Set while a compaction runs, so only one does.
    compacting: AtomicBool,
    /// After a compaction failed: the journal length to reach before the next attempt.
    retry_at: AtomicUsize,
}

/// `error: cause: cause…`, for logs and the report.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The generations of the journals in `dir`, in order.
fn journal_generations(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut generations = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        if let Some(generation) = entry?.file_name().to_str().and_then(journal_generation) {
            generations.push(generation);
        }
    }
    generations.sort_unstable();
    Ok(generations)
}

fn remove_file_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// What [`load`] read.
struct Loaded {
    index: Index,
    writer: JournalWriter,
    loaded: usize,
    replayed: usize,
    torn: Option<IndexError>,
}

/// Loads the snapshot and replays the journals after it.
fn load(dir: &Path) -> Result<Loaded, IndexError> {
    let mut index = Index::default();
    let mut loaded = 0;
    let generation = journal::read_snapshot(&dir.join(SNAPSHOT_FILE), |record| {
        index.insert(&record);
        loaded += 1;
    })?;
    let io = |source| IndexError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut generations = journal_generations(dir).map_err(io)?;
    // Journals before the snapshot's are in it already: a compaction stopped before deleting them.
    for &old in generations.iter().filter(|&&g| g < generation) {
        remove_file_if_present(&journal_path(dir, old)).map_err(io)?;
    }
    generations.retain(|&g| g >= generation);
    for (i, &found) in generations.iter().enumerate() {
        let expected = generation + i as u64;
        if found != expected {
            return Err(IndexError::MissingJournal(expected));
        }
    }
    let last = *generations
        .last()
        .ok_or(IndexError::MissingJournal(generation))?;
    let (mut replayed, mut torn, mut good_len, mut last_changes) = (0, None, 0, 0);
    for &g in &generations {
        let read =
            journal::read_journal(&journal_path(dir, g), g, g == last, |change| match change {
                Change::Put(record) => index.insert(&record),
                Change::Remove(id) => {
                    index.remove(&id);
                }
            })?;
        replayed += read.changes;
        if g == last {
            (good_len, torn, last_changes) = (read.good_len, read.torn, read.changes);
        }
    }
    let path = journal_path(dir, last);
    let mut writer = JournalWriter::reopen(&path, last, good_len, last_changes)
        .map_err(|source| IndexError::Io { path, source })?;
    writer.add_replayed(replayed - last_changes);
    Ok(Loaded {
        index,
        writer,
        loaded,
        replayed,
        torn,
    })
}

/// Builds the index from every record file, settling each record as a start after a crash must: a
/// sandbox with a blob is paused (its pause completed, whatever the record says), one without is lost
/// (unless it was killed and is not there at all).
fn rebuild(store: &DurableStore) -> std::io::Result<(Index, Unreadable)> {
    let (records, unreadable) = store.load_records()?;
    let mut index = Index::default();
    for mut record in records {
        let settled = match record.state {
            SandboxState::Lost => SandboxState::Lost,
            _ if store.blob_path(&record.id).is_file() => SandboxState::Paused,
            _ => SandboxState::Lost,
        };
        // The half-written files of a sandbox that is not running are garbage: its blob has them all.
        remove_dir_if_present(&store.fs_dir(&record.id))?;
        if settled != record.state {
            record.state = settled;
            store.save_record(&record)?;
        }
        index.insert(&record);
    }
    Ok((index, unreadable))
}

/// Writes a fresh snapshot of `index` and an empty journal after it, replacing whatever was in `dir`.
fn write_fresh(dir: &Path, index: &Index) -> std::io::Result<JournalWriter> {
    // A generation after every journal there, so none left over can be taken for part of the new one.
    let generation = journal_generations(dir)?.last().map_or(1, |g| g + 1);
    // The journal first: a crash before the snapshot is renamed into place leaves the old (missing or
    // damaged) snapshot, so the next start rebuilds again.
    let writer = JournalWriter::create(dir, generation)?;
    let mut entries = index.entries();
    Index::sort(&mut entries);
    journal::write_snapshot(dir, generation, entries.iter().map(|e| e.record()))?;
    for old in journal_generations(dir)? {
        if old != generation {
            remove_file_if_present(&journal_path(dir, old))?;
        }
    }
    Ok(writer)
}

impl Catalog {
    /// Opens the index of `store`: loads it, or rebuilds it from the record files when it is missing or
    /// damaged. Also returns the record files a rebuild could not read.
    pub(crate) fn open(
        store: DurableStore,
        compact_after: Option<usize>,
    ) -> std::io::Result<(Self, IndexReport, Unreadable)> {
        let dir = store.index_dir();
        std::fs::create_dir_all(&dir)?;
        // Temp files of snapshots whose write a crash interrupted.
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(".tmp") {
                remove_file_if_present(&entry.path())?;
            }
        }
        let mut report = IndexReport::default();
        let mut unreadable = Vec::new();
        let (index, writer) = match load(&dir) {
            Ok(loaded) => {
                report.loaded = loaded.loaded;
                report.replayed = loaded.replayed;
                if let Some(torn) = loaded.torn {
                    let why = chain(&torn);
                    tracing::warn!(%why, "dropped a change a crash cut short at the end of the index journal");
                    report.torn_tail = Some(why);
                }
                (loaded.index, loaded.writer)
            }
            // Whatever went wrong (an unreadable file included), the record files hold everything.
            Err(error) => {
                let why = chain(&error);
                if matches!(error, IndexError::Missing) {
                    tracing::info!("building the sandbox index from the record files");
                } else {
                    tracing::warn!(%why, "the sandbox index is damaged; rebuilding it from the record files");
                }
                let (index, bad) = rebuild(&store)?;
                unreadable = bad;
                report.loaded = index.len();
                report.rebuilt = Some(why);
                let writer = write_fresh(&dir, &index)?;
                (index, writer)
            }
        };
        let catalog = Self {
            store,
            dir,
            index: RwLock::new(index),
            journal: Mutex::new(writer),
            compact_after,
            compacting: AtomicBool::new(false),
            retry_at: AtomicUsize::new(0),
        };
        Ok((catalog, report, unreadable))
    }

    /// Records `record` durably (see the module doc for the order). On `Err`, nothing changed.
    pub(crate) fn put(&self, record: &SandboxRecord) -> std::io::Result<()> {
        let frame = journal::encode(&Frame::Put(Box::new(record.clone())))?;
        let (previous, changes) = {
            let mut journal = self.journal.lock();
            let previous = self.index.read().entry(&record.id);
            journal.append(&frame)?;
            self.index.write().insert(record);
            (previous, journal.changes())
        };
        if let Err(error) = self.store.save_record(record) {
            self.undo(&record.id, previous);
            return Err(error);
        }
        self.maybe_compact(changes);
        Ok(())
    }

    /// Puts back what sandbox `id` was before a change whose record file could not be written.
    fn undo(&self, id: &str, previous: Option<Arc<Entry>>) {
        let mut journal = self.journal.lock();
        let previous = previous.map(|e| e.record());
        let frame = match &previous {
            Some(record) => Frame::Put(Box::new(record.clone())),
            None => Frame::Remove { id: id.to_owned() },
        };
        match journal::encode(&frame).and_then(|bytes| journal.append(&bytes)) {
            Ok(()) => {
                let mut index = self.index.write();
                match &previous {
                    Some(record) => index.insert(record),
                    None => {
                        index.remove(id);
                    }
                }
            }
            Err(error) => tracing::error!(
                sandbox = %id, %error,
                "a change whose record file could not be written could not be undone in the index \
                 journal either; the sandbox keeps the changed record"
            ),
        }
    }

    /// Removes sandbox `id` durably: its record file first, then the journal (see the module doc).
    pub(crate) fn remove(&self, id: &str) -> std::io::Result<()> {
        self.store.remove_record(id)?;
        let frame = journal::encode(&Frame::Remove { id: id.to_owned() })?;
        let changes = {
            let mut journal = self.journal.lock();
            if let Err(error) = journal.append(&frame) {
                // The journal keeps the sandbox, so its record file must be there for a rebuild too.
                if let Some(record) = self.index.read().get(id)
                    && let Err(restore) = self.store.save_record(&record)
                {
                    tracing::error!(sandbox = %id, error = %restore, "could not restore a record file");
                }
                return Err(error);
            }
            self.index.write().remove(id);
            journal.changes()
        };
        self.maybe_compact(changes);
        Ok(())
    }

    fn maybe_compact(&self, changes: usize) {
        let threshold = self
            .compact_after
            .unwrap_or_else(|| self.index.read().len().max(MIN_COMPACTION));
        if changes < threshold.max(self.retry_at.load(Ordering::Relaxed)) {
            return;
        }
        if self.compacting.swap(true, Ordering::AcqRel) {
            return;
        }
        let started = std::time::Instant::now();
        let result = self.compact();
        self.compacting.store(false, Ordering::Release);
        match result {
            Ok(count) => {
                self.retry_at.store(0, Ordering::Relaxed);
                tracing::debug!(records = count, elapsed = ?started.elapsed(), "index journal compacted");
            }
            Err(error) => {
                // Retried after as many changes again, not on every change while the disk refuses.
                self.retry_at
                    .store(changes.saturating_add(threshold), Ordering::Relaxed);
                tracing::warn!(%error, "the index journal could not be compacted; it keeps growing");
            }
        }
    }

    /// Writes the index as a new snapshot and starts a new journal (see the module doc). Returns how
    /// many records the snapshot holds.
    pub(crate) fn compact(&self) -> std::io::Result<u64> {
        let (generation, entries, previous_changes) = {
            let mut journal = self.journal.lock();
            let generation = journal.generation() + 1;
            let next = JournalWriter::create(&self.dir, generation)?;
            let entries = self.index.read().entries();
            let previous = std::mem::replace(&mut *journal, next);
            (generation, entries, previous.changes())
        };
        let mut entries = entries;
        Index::sort(&mut entries);
        let written =
            journal::write_snapshot(&self.dir, generation, entries.iter().map(|e| e.record()));
        let count = match written {
            Ok(count) => count,
            Err(error) => {
                // The previous snapshot and both journals still hold everything; a start replays both.
                self.journal.lock().add_replayed(previous_changes);
                return Err(error);
            }
        };
        for old in journal_generations(&self.dir)? {
            if old < generation {
                remove_file_if_present(&journal_path(&self.dir, old))?;
            }
        }
        Ok(count)
    }

    /// The record of sandbox `id`.
    pub(crate) fn get(&self, id: &str) -> Option<SandboxRecord> {
        self.index.read().get(id)
    }

    /// The public view of sandbox `id`.
    pub(crate) fn info(&self, id: &str) -> Option<SandboxInfo> {
        self.index.read().info(id)
    }

    /// Whether sandbox `id` exists.
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.index.read().contains(id)
    }

    /// One page of a listing (see [`Index::list`]).
    pub(crate) fn list(&self, query: &ListQuery, after: Option<Key>, limit: usize) -> IndexPage {
        self.index.read().list(query, after, limit)
    }

    /// How many sandboxes are in `state`.
    pub(crate) fn count(&self, state: SandboxState) -> usize {
        self.index.read().count(state)
    }

    /// The ids of the sandboxes in any of `states`, in the listing's order.
    pub(crate) fn ids_in(&self, states: &[SandboxState]) -> Vec<String> {
        self.index.read().ids_in(states)
    }

    /// The records of the sandboxes in any of `states`.
    pub(crate) fn records_in(&self, states: &[SandboxState]) -> Vec<SandboxRecord> {
        let index = self.index.read();
        index
            .ids_in(states)
            .iter()
            .filter_map(|id| index.get(id))
            .collect()
    }

    /// A sandbox that mounts volume `volume_id`, if any.
    pub(crate) fn mounting(&self, volume_id: &str) -> Option<String> {
        self.index.read().mounting(volume_id)
    }

    /// The ids of the sandboxes without an owner.
    pub(crate) fn unowned(&self) -> Vec<String> {
        self.index.read().unowned()
    }

    /// What the reaper must look at (see [`Index::due`]).
    pub(crate) fn due(&self, now_ms: u64) -> Vec<String> {
        self.index.read().due(now_ms)
    }

    /// One more than the largest sequence number of any sandbox.
    pub(crate) fn next_sequence(&self) -> u64 {
        self.index.read().next_sequence()
    }
}
