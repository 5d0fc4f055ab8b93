//! The durable store of the lifecycle, inside the runtime's data directory:
//!
//! ```text
//! boxes/<id>/record.json     the sandbox's record, rewritten atomically on every transition
//! boxes/<id>/state.blob      its blob while it is paused (deleted once a resume is recorded)
//! boxes/<id>/fs/             its directory while it runs (the guest's `/`)
//! snapshots/<id>/meta.json   a snapshot's description
//! snapshots/<id>/state.blob  the snapshot's blob, immutable
//! index/snapshot             every record at one point in time       } the index of the records, so a
//! index/journal-<generation> every record change since, appended     } start reads two files, not one
//!                                                                      per sandbox (see `catalog`)
//! ```
//!
//! Every file but the journal is written atomically (a temp file in the same directory, `sync_all`,
//! rename, then the directory synced), so after a crash a file is either the old version or the new
//! one, never half of each; the journal's frames are checksummed, so a cut-short append is recognised.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::id::is_valid;
use super::mode::PauseMode;
use super::record::SandboxRecord;
use super::volumes::VolumeMount;

/// A snapshot's description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// The snapshot's id.
    pub id: String,
    /// Its name, if one was given.
    pub name: Option<String>,
    /// The sandbox it was taken from.
    pub source_sandbox: String,
    /// Name of the template of that sandbox.
    pub template: String,
    /// Metadata of that sandbox at the time.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// When it was taken (ms since the Unix epoch).
    pub created_at_ms: u64,
    /// Size of its blob in bytes.
    pub size_bytes: u64,
    /// Who owns it: the owner of the sandbox it was taken from (see
    /// [`SandboxRecord::owner`](super::record::SandboxRecord::owner)); `None` in descriptions written before
    /// owners existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// What it holds: memory and files, or files only (sandboxes from it cold-start their template).
    #[serde(default)]
    pub mode: PauseMode,
    /// The volumes its sandbox mounted: a sandbox started from a full snapshot mounts the same ones,
    /// since its processes' open files may lie in them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<VolumeMount>,
}

/// The lifecycle's files.
#[derive(Debug, Clone)]
pub struct DurableStore {
    root: PathBuf,
}

/// Records that could not be read back, with why: reported at startup, never silently dropped.
pub type Unreadable = Vec<(PathBuf, String)>;

impl DurableStore {
    /// Opens (creating if needed) the store under `root`.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root.join("boxes"))?;
        std::fs::create_dir_all(root.join("snapshots"))?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// The directory holding everything of sandbox `id`.
    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.root.join("boxes").join(id)
    }

    /// The guest's `/` of sandbox `id` while it runs.
    pub fn fs_dir(&self, id: &str) -> PathBuf {
        self.sandbox_dir(id).join("fs")
    }

    /// The blob of sandbox `id` while it is paused.
    pub fn blob_path(&self, id: &str) -> PathBuf {
        self.sandbox_dir(id).join("state.blob")
    }

    /// The directory of the index of the records (see [`super::catalog`]).
    pub fn index_dir(&self) -> PathBuf {
        self.root.join("index")
    }

    /// The record file of sandbox `id`.
    pub fn record_path(&self, id: &str) -> PathBuf {
        self.sandbox_dir(id).join("record.json")
    }

    /// Bytes free for an unprivileged writer on the data directory's file system.
    pub fn free_bytes(&self) -> std::io::Result<u64> {
        let stat = rustix::fs::statvfs(&self.root)?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// The directory of snapshot `id`.
    pub fn snapshot_dir(&self, id: &str) -> PathBuf {
        self.root.join("snapshots").join(id)
    }

    /// The blob of snapshot `id`.
    pub fn snapshot_blob(&self, id: &str) -> PathBuf {
        self.snapshot_dir(id).join("state.blob")
    }

    /// Writes a sandbox's record atomically.
    pub fn save_record(&self, record: &SandboxRecord) -> std::io::Result<()> {
        let dir = self.sandbox_dir(&record.id);
        std::fs::create_dir_all(&dir)?;
        write_atomic(
            &dir.join("record.json"),
            &serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?,
        )
    }

    /// Deletes the record file of sandbox `id` (durably: its directory is synced), the first step of a
    /// kill, so that a rebuilt index never finds a killed sandbox. One already gone is fine.
    pub fn remove_record(&self, id: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.record_path(id)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
            Ok(()) => std::fs::File::open(self.sandbox_dir(id))?.sync_all(),
        }
    }

    /// Every sandbox record on disk, and the ones that could not be read: one file per sandbox, so only
    /// for rebuilding the index (see [`super::catalog`]).
    pub fn load_records(&self) -> std::io::Result<(Vec<SandboxRecord>, Unreadable)> {
        let mut records = Vec::new();
        let mut unreadable = Vec::new();
        for entry in std::fs::read_dir(self.root.join("boxes"))? {
            let entry = entry?;
            let path = entry.path().join("record.json");
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<SandboxRecord>(&bytes).map_err(|e| e.to_string())
                }) {
                // Its id names its files: one that is not its directory's name (a directory copied
                // under another name, a crafted `../x`) would point elsewhere.
                Ok(record) if !is_valid(&record.id, "") || entry.file_name() != *record.id => {
                    unreadable.push((path, "its id is not its directory's name".to_owned()))
                }
                Ok(record) => records.push(record),
                Err(why) => unreadable.push((path, why)),
            }
        }
        Ok((records, unreadable))
    }

    /// Deletes everything of sandbox `id`.
    pub fn delete_sandbox(&self, id: &str) -> std::io::Result<()> {
        remove_dir_if_present(&self.sandbox_dir(id))
    }

    /// Writes a snapshot's description atomically.
    pub fn save_snapshot(&self, info: &SnapshotInfo) -> std::io::Result<()> {
        let dir = self.snapshot_dir(&info.id);
        std::fs::create_dir_all(&dir)?;
        write_atomic(
            &dir.join("meta.json"),
            &serde_json::to_vec_pretty(info).map_err(std::io::Error::other)?,
        )
    }

    /// Every snapshot on disk (only those whose blob exists: a crash before the description was written
    /// leaves an orphan blob, which is removed here).
    pub fn load_snapshots(&self) -> std::io::Result<(Vec<SnapshotInfo>, Unreadable)> {
        let mut snapshots = Vec::new();
        let mut unreadable = Vec::new();
        for entry in std::fs::read_dir(self.root.join("snapshots"))? {
            let dir = entry?.path();
            let meta = dir.join("meta.json");
            if !meta.exists() {
                remove_dir_if_present(&dir)?;
                continue;
            }
            match std::fs::read(&meta)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<SnapshotInfo>(&bytes).map_err(|e| e.to_string())
                }) {
                Ok(info) if dir.join("state.blob").is_file() => snapshots.push(info),
                Ok(_) => unreadable.push((meta, "its blob is missing".to_owned())),
                Err(why) => unreadable.push((meta, why)),
            }
        }
        Ok((snapshots, unreadable))
    }

    /// Deletes snapshot `id`.
    pub fn delete_snapshot(&self, id: &str) -> std::io::Result<()> {
        remove_dir_if_present(&self.snapshot_dir(id))
    }
}

/// Removes a directory tree; one that is already gone is fine.
pub fn remove_dir_if_present(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes `bytes` to `path` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("path has no parent directory"))?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}
