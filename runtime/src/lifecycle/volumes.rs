//! Volumes: named persistent directories that live outside every sandbox, in the data directory,
//! mounted read-write into any number of sandboxes (E2B's `Volume` and `volume_mounts`).
//!
//! ```text
//! volumes/<id>/meta.json   the volume's description, written atomically
//! volumes/<id>/data/       its files: what every sandbox mounting it sees at its mount path
//! ```
//!
//! A volume is not part of any sandbox: a pause leaves its files out of the blob (the blob's archive
//! covers the sandbox's own root only), a resume mounts it again, and killing a sandbox leaves it as it
//! is. Each volume has one disk quota, shared by every sandbox that mounts it and by the volume file API,
//! so what a guest can write into it is bounded like its own root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::id::{is_valid, new_id};
use super::record::now_ms;
use super::store::{Unreadable, remove_dir_if_present, write_atomic};
use crate::wasi::{DiskQuota, Mount};

/// Prefix of volume ids.
pub const VOLUME_PREFIX: &str = "vol_";
/// Most volumes one sandbox may mount.
pub const MAX_MOUNTS: usize = 16;
/// Longest mount path, in bytes.
pub const MAX_MOUNT_PATH: usize = 255;
/// Quota of a volume created without one: 1 GiB.
pub const DEFAULT_QUOTA_BYTES: u64 = 1 << 30;
/// Largest quota a volume may ask for: 64 GiB.
pub const MAX_QUOTA_BYTES: u64 = 64 << 30;
/// Most files and directories in a volume.
pub const MAX_FILES: u64 = 100_000;

/// A volume's description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    /// Its id (`vol_…`).
    pub id: String,
    /// Its name, unique among its owner's volumes.
    pub name: String,
    /// Who owns it (see [`super::SandboxRecord::owner`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// When it was created (ms since the Unix epoch).
    pub created_at_ms: u64,
    /// Most bytes of file content it may hold.
    pub quota_bytes: u64,
}

/// A volume mounted into a sandbox, as its record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    /// The volume's id.
    pub volume_id: String,
    /// The volume's name (as the SDKs report mounts).
    pub name: String,
    /// The absolute guest path it is mounted at (`/data`).
    pub path: String,
}

/// Why a volume operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// No volume with this id (or name).
    #[error("volume {0} not found")]
    NotFound(String),
    /// The owner already has a volume of this name.
    #[error("a volume named {0:?} already exists")]
    NameTaken(String),
    /// The name is not one a volume may have.
    #[error(
        "invalid volume name {0:?}: 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit"
    )]
    InvalidName(String),
    /// The quota asked for is out of range.
    #[error("a volume's quota is 1 byte to {max} GiB, not {0} GiB", max = MAX_QUOTA_BYTES >> 30)]
    Quota(u64),
    /// A mount path is not one a volume may be mounted at.
    #[error("invalid mount path {path:?}: {why}")]
    InvalidPath {
        /// The path asked for.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A sandbox mounts the volume (running or paused), so destroying it would break that sandbox.
    #[error("volume {volume} is mounted by sandbox {sandbox}; kill the sandbox first")]
    InUse {
        /// The volume.
        volume: String,
        /// A sandbox mounting it.
        sandbox: String,
    },
    /// The data directory could not be read or written.
    #[error("the volume store could not be updated")]
    Io(#[from] std::io::Error),
}

struct Entry {
    info: VolumeInfo,
    quota: Arc<DiskQuota>,
}

/// Every volume of a data directory.
pub struct Volumes {
    root: PathBuf,
    entries: RwLock<BTreeMap<String, Entry>>,
}

impl std::fmt::Debug for Volumes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volumes").field("root", &self.root).finish()
    }
}

impl Volumes {
    /// Opens (creating if needed) the volumes under `data_dir/volumes`; descriptions that cannot be read
    /// are reported, never deleted.
    pub fn open(data_dir: &Path) -> std::io::Result<(Self, Unreadable)> {
        let root = data_dir.join("volumes");
        std::fs::create_dir_all(&root)?;
        let mut entries = BTreeMap::new();
        let mut unreadable = Vec::new();
        for entry in std::fs::read_dir(&root)? {
            let meta = entry?.path().join("meta.json");
            match std::fs::read(&meta)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<VolumeInfo>(&b).map_err(|e| e.to_string()))
            {
                Ok(info) if is_valid(&info.id, VOLUME_PREFIX) => {
                    let quota = Arc::new(DiskQuota::new(info.quota_bytes, MAX_FILES));
                    entries.insert(info.id.clone(), Entry { info, quota });
                }
                Ok(info) => unreadable.push((meta, format!("invalid volume id {:?}", info.id))),
                Err(why) => unreadable.push((meta, why)),
            }
        }
        Ok((
            Self {
                root,
                entries: RwLock::new(entries),
            },
            unreadable,
        ))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a volume named `name` for `owner`, with `quota_bytes` (or the default) of space.
    pub fn create(
        &self,
        name: &str,
        owner: Option<String>,
        quota_bytes: Option<u64>,
    ) -> Result<VolumeInfo, VolumeError> {
        if !valid_name(name) {
            return Err(VolumeError::InvalidName(name.chars().take(80).collect()));
        }
        let quota_bytes = quota_bytes.unwrap_or(DEFAULT_QUOTA_BYTES);
        if quota_bytes == 0 || quota_bytes > MAX_QUOTA_BYTES {
            return Err(VolumeError::Quota(quota_bytes >> 30));
        }
        let mut entries = self.write();
        if entries
            .values()
            .any(|e| e.info.owner == owner && e.info.name == name)
        {
            return Err(VolumeError::NameTaken(name.to_owned()));
        }
        let info = VolumeInfo {
            id: new_id(VOLUME_PREFIX),
            name: name.to_owned(),
            owner,
            created_at_ms: now_ms(),
            quota_bytes,
        };
        let dir = self.root.join(&info.id);
        let stored = std::fs::create_dir_all(dir.join("data")).and_then(|()| {
            write_atomic(
                &dir.join("meta.json"),
                &serde_json::to_vec_pretty(&info).map_err(std::io::Error::other)?,
            )
        });
        if let Err(error) = stored {
            remove_dir_if_present(&dir)?;
            return Err(error.into());
        }
        let quota = Arc::new(DiskQuota::new(quota_bytes, MAX_FILES));
        entries.insert(
            info.id.clone(),
            Entry {
                info: info.clone(),
                quota,
            },
        );
        Ok(info)
    }

    /// Volume `id`.
    pub fn get(&self, id: &str) -> Result<VolumeInfo, VolumeError> {
        self.read()
            .get(id)
            .map(|e| e.info.clone())
            .ok_or_else(|| VolumeError::NotFound(id.to_owned()))
    }

    /// `owner`'s volume named `name`.
    pub fn by_name(&self, owner: Option<&str>, name: &str) -> Result<VolumeInfo, VolumeError> {
        self.read()
            .values()
            .find(|e| e.info.owner.as_deref() == owner && e.info.name == name)
            .map(|e| e.info.clone())
            .ok_or_else(|| VolumeError::NotFound(name.to_owned()))
    }

    /// `owner`'s volumes, oldest first.
    pub fn list(&self, owner: Option<&str>) -> Vec<VolumeInfo> {
        let mut all: Vec<VolumeInfo> = self
            .read()
            .values()
            .filter(|e| e.info.owner.as_deref() == owner)
            .map(|e| e.info.clone())
            .collect();
        all.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        all
    }

    /// Deletes volume `id` and its files. Whether a sandbox still mounts it is the caller's to check
    /// ([`super::Manager::destroy_volume`] does).
    pub fn destroy(&self, id: &str) -> Result<(), VolumeError> {
        if self.write().remove(id).is_none() {
            return Err(VolumeError::NotFound(id.to_owned()));
        }
        remove_dir_if_present(&self.root.join(id))?;
        Ok(())
    }

    /// The host directory holding volume `id`'s files.
    pub fn data_dir(&self, id: &str) -> Result<PathBuf, VolumeError> {
        if !self.read().contains_key(id) {
            return Err(VolumeError::NotFound(id.to_owned()));
        }
        Ok(self.root.join(id).join("data"))
    }

    /// Volume `id`'s quota, shared with every sandbox mounting it; scanned on first use.
    pub fn quota(&self, id: &str) -> Result<Arc<DiskQuota>, VolumeError> {
        let quota = self
            .read()
            .get(id)
            .map(|e| e.quota.clone())
            .ok_or_else(|| VolumeError::NotFound(id.to_owned()))?;
        quota.ensure_scanned(&self.root.join(id).join("data"))?;
        Ok(quota)
    }

    /// The WASI mount that shows `mount`'s volume at its path, read-write, under the volume's quota.
    pub fn mount(&self, mount: &VolumeMount) -> Result<Mount, VolumeError> {
        Ok(Mount {
            host: self.data_dir(&mount.volume_id)?,
            guest: mount.path.clone(),
            read_only: false,
            quota: Some(self.quota(&mount.volume_id)?),
        })
    }
}

/// `^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`.
pub fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Checks a sandbox's mount paths and returns them normalized (`/data/` → `/data`): each absolute, not
/// the root, made of plain components (no `.`, `..` or empty ones), at most [`MAX_MOUNT_PATH`] bytes,
/// none inside another, at most [`MAX_MOUNTS`] of them.
pub fn check_mount_paths(paths: &[String]) -> Result<Vec<String>, VolumeError> {
    if paths.len() > MAX_MOUNTS {
        return Err(VolumeError::InvalidPath {
            path: format!("{} mounts", paths.len()),
            why: "a sandbox mounts at most 16 volumes",
        });
    }
    let mut normalized: Vec<String> = Vec::with_capacity(paths.len());
    for path in paths {
        let bad = |why| VolumeError::InvalidPath {
            path: path.chars().take(80).collect(),
            why,
        };
        if path.len() > MAX_MOUNT_PATH {
            return Err(bad("longer than 255 bytes"));
        }
        let Some(rest) = path.strip_prefix('/') else {
            return Err(bad("not an absolute path"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() {
            return Err(bad("the root cannot be a mount point"));
        }
        if rest
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\0'))
        {
            return Err(bad("empty, '.' or '..' components"));
        }
        let clean = format!("/{rest}");
        if normalized.iter().any(|other| {
            other == &clean
                || clean.starts_with(&format!("{other}/"))
                || other.starts_with(&format!("{clean}/"))
        }) {
            return Err(bad("it is, contains or lies inside another mount"));
        }
        normalized.push(clean);
    }
    Ok(normalized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_unique_per_owner() -> Result<(), VolumeError> {
        let dir = tempfile::tempdir()?;
        let (volumes, _) = Volumes::open(dir.path())?;
        let a = volumes.create("data", Some("alice".into()), None)?;
        assert!(matches!(
            volumes.create("data", Some("alice".into()), None),
            Err(VolumeError::NameTaken(_))
        ));
        volumes.create("data", Some("bob".into()), None)?;
        assert!(matches!(
            volumes.create("../x", None, None),
            Err(VolumeError::InvalidName(_))
        ));
        assert!(matches!(
            volumes.create("big", None, Some(MAX_QUOTA_BYTES + 1)),
            Err(VolumeError::Quota(_))
        ));
        assert_eq!(volumes.by_name(Some("alice"), "data")?.id, a.id);
        // Back after a reopen.
        let (again, unreadable) = Volumes::open(dir.path())?;
        assert!(unreadable.is_empty());
        assert_eq!(again.get(&a.id)?, a);
        again.destroy(&a.id)?;
        assert!(!dir.path().join("volumes").join(&a.id).exists());
        assert!(matches!(
            again.destroy(&a.id),
            Err(VolumeError::NotFound(_))
        ));
        Ok(())
    }

    #[test]
    fn mount_paths_are_absolute_plain_and_disjoint() {
        let paths = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            check_mount_paths(&paths(&["/data/", "/mnt/cache"])).ok(),
            Some(paths(&["/data", "/mnt/cache"]))
        );
        for bad in [
            &["data"][..],
            &["/"],
            &["/a/../b"],
            &["/a//b"],
            &["/a", "/a/b"],
            &["/a/b", "/a"],
            &["/a", "/a/"],
        ] {
            assert!(check_mount_paths(&paths(bad)).is_err(), "{bad:?}");
        }
    }
}
