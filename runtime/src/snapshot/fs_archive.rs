//! The filesystem archive: the sandbox directory captured into a blob and
//! restored from it byte-identical.
//!
//! An archive is an index (paths, kinds, modes, mtimes, symlink targets) plus
//! the concatenated contents of the regular files in index order. In a blob
//! the Filesystem section holds `index_len:u64 LE | bincode(index) | data`.
//!
//! Restore treats the archive as hostile: every path is validated (relative,
//! no `.`/`..`/empty/NUL components, no duplicates, parent listed earlier as a
//! directory), and everything is created through a `cap_std::fs::Dir` opened
//! on the target, so even an archive that slipped past validation could not
//! make the restore follow a symlink out of the target directory.

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cap_fs_ext::{DirExt, SystemTimeSpec};
use cap_std::ambient_authority;
use cap_std::fs::Dir;
use serde::{Deserialize, Serialize};

use super::decode::bincode_decode_bounded;
use super::error::ArchiveError;

/// Permission bits kept. setuid, setgid and sticky are deliberately dropped:
/// a guest cannot set them through WASI, and restoring them from a hostile
/// blob would hand out the host user's privileges.
const MODE_MASK: u32 = 0o777;

/// A modification time as seconds and nanoseconds relative to the Unix epoch
/// (seconds may be negative), at the filesystem's full resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsTime {
    /// Whole seconds since the epoch.
    pub secs: i64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub nanos: u32,
}

impl FsTime {
    fn of(md: &fs::Metadata) -> Self {
        Self {
            secs: md.mtime(),
            // The kernel guarantees 0..1e9; clamp instead of trusting it.
            nanos: u32::try_from(md.mtime_nsec()).unwrap_or(0).min(999_999_999),
        }
    }

    /// The time as a [`SystemTime`], or `None` when out of range.
    pub fn to_system_time(self) -> Option<SystemTime> {
        if self.nanos >= 1_000_000_000 {
            return None;
        }
        let base = if self.secs >= 0 {
            UNIX_EPOCH.checked_add(Duration::from_secs(self.secs.unsigned_abs()))?
        } else {
            UNIX_EPOCH.checked_sub(Duration::from_secs(self.secs.unsigned_abs()))?
        };
        base.checked_add(Duration::from_nanos(u64::from(self.nanos)))
    }
}

/// What an archive entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FsEntryKind {
    /// A directory.
    Dir,
    /// A regular file of `len` bytes; its contents follow the previous
    /// files' in the archive data.
    File {
        /// Content length in bytes.
        len: u64,
    },
    /// A symbolic link, never followed at capture or restore.
    Symlink {
        /// The link's target, verbatim.
        target: String,
    },
}

/// One file, directory or symlink of the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsEntry {
    /// Path relative to the archive root, `/`-separated.
    pub path: String,
    /// What the entry is.
    pub kind: FsEntryKind,
    /// Permission bits (`0o777` mask); ignored for symlinks.
    pub mode: u32,
    /// Modification time.
    pub mtime: FsTime,
}

/// Mode and mtime of the archived root directory itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsRootMeta {
    /// Permission bits.
    pub mode: u32,
    /// Modification time.
    pub mtime: FsTime,
}

/// Bounds on what [`FsArchive::capture`] accepts (and, in a blob, what the
/// decoder accepts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Maximum number of entries (files, directories and symlinks).
    pub max_entries: u64,
    /// Maximum total bytes of file contents.
    pub max_total_bytes: u64,
    /// Maximum directory nesting depth below the root.
    pub max_depth: u32,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        Self {
            max_entries: 1 << 20,
            max_total_bytes: 4 << 30,
            max_depth: 256,
        }
    }
}

/// Serialized index, borrowed on the way out.
#[derive(Serialize)]
struct IndexRef<'a> {
    root: &'a Option<FsRootMeta>,
    entries: &'a [FsEntry],
}

/// Serialized index, owned on the way in (same field order as [`IndexRef`]).
#[derive(Deserialize)]
struct Index {
    root: Option<FsRootMeta>,
    entries: Vec<FsEntry>,
}

/// An archive of a sandbox directory. See the [module docs](self).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FsArchive {
    root: Option<FsRootMeta>,
    entries: Vec<FsEntry>,
    data: Vec<u8>,
}

impl std::fmt::Debug for FsArchive {
    // Not derived: file contents can be gigabytes and have no place in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsArchive")
            .field("root", &self.root)
            .field("entries", &self.entries)
            .field("data_len", &self.data.len())
            .finish()
    }
}

impl FsArchive {
    /// An empty archive that leaves the restore target's own mode and mtime
    /// untouched.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the mode and mtime the restore gives the target directory.
    pub fn set_root(&mut self, root: Option<FsRootMeta>) {
        self.root = root;
    }

    /// The root directory's recorded mode and mtime, if any.
    pub fn root(&self) -> Option<&FsRootMeta> {
        self.root.as_ref()
    }

    /// Appends a directory entry. No validation happens here (so tests and
    /// tools can build hostile archives); [`FsArchive::validate`] and
    /// [`FsArchive::restore_into`] check.
    pub fn push_dir(&mut self, path: impl Into<String>, mode: u32, mtime: FsTime) {
        self.entries.push(FsEntry {
            path: path.into(),
            kind: FsEntryKind::Dir,
            mode,
            mtime,
        });
    }

    /// Appends a regular file entry with its contents (unvalidated, as
    /// [`FsArchive::push_dir`]).
    pub fn push_file(
        &mut self,
        path: impl Into<String>,
        mode: u32,
        mtime: FsTime,
        contents: &[u8],
    ) {
        self.entries.push(FsEntry {
            path: path.into(),
            kind: FsEntryKind::File {
                len: contents.len() as u64,
            },
            mode,
            mtime,
        });
        self.data.extend_from_slice(contents);
    }

    /// Appends a symlink entry (unvalidated, as [`FsArchive::push_dir`]).
    pub fn push_symlink(
        &mut self,
        path: impl Into<String>,
        target: impl Into<String>,
        mtime: FsTime,
    ) {
        self.entries.push(FsEntry {
            path: path.into(),
            kind: FsEntryKind::Symlink {
                target: target.into(),
            },
            mode: 0o777,
            mtime,
        });
    }

    /// The entries in archive order (every parent before its children).
    pub fn entries(&self) -> &[FsEntry] {
        &self.entries
    }

    /// Total bytes of file contents.
    pub fn data_len(&self) -> u64 {
        self.data.len() as u64
    }

    /// The entries with, for regular files, their contents.
    pub fn iter(&self) -> impl Iterator<Item = (&FsEntry, Option<&[u8]>)> + '_ {
        let mut offset = 0usize;
        self.entries.iter().map(move |e| match e.kind {
            FsEntryKind::File { len } => {
                // Archives built through this API or decoded (which checks
                // that the lengths sum to the data length) always have the
                // bytes; `get` keeps a bad length from panicking regardless.
                let start = offset;
                let end = start.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
                offset = end;
                (e, Some(self.data.get(start..end).unwrap_or(&[])))
            }
            _ => (e, None),
        })
    }

    /// Captures the directory tree under `root` (not following symlinks).
    ///
    /// Entries are sorted by name within each directory so the same tree
    /// always yields the same archive. Fifos, sockets and devices are refused.
    pub fn capture(root: &Path, limits: &ArchiveLimits) -> Result<Self, ArchiveError> {
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| ArchiveError::Io { op, path, source }
        };
        let root_md = fs::symlink_metadata(root).map_err(io("stat", root))?;
        if !root_md.is_dir() {
            return Err(ArchiveError::UnsupportedFileType {
                path: root.to_path_buf(),
            });
        }
        let mut archive = FsArchive {
            root: Some(FsRootMeta {
                mode: root_md.mode() & MODE_MASK,
                mtime: FsTime::of(&root_md),
            }),
            ..FsArchive::default()
        };
        // Iterative walk so a deep tree cannot overflow the stack.
        let mut stack: Vec<(String, u32)> = vec![(String::new(), 0)];
        while let Some((rel, depth)) = stack.pop() {
            let abs = if rel.is_empty() {
                root.to_path_buf()
            } else {
                root.join(&rel)
            };
            let mut children = Vec::new();
            for entry in fs::read_dir(&abs).map_err(io("read directory", &abs))? {
                let entry = entry.map_err(io("read directory", &abs))?;
                let name = entry
                    .file_name()
                    .into_string()
                    .map_err(|_| ArchiveError::NonUtf8 { path: entry.path() })?;
                children.push(name);
            }
            children.sort_unstable();
            let mut subdirs = Vec::new();
            for name in children {
                let child_rel = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let child_abs = root.join(&child_rel);
                if archive.entries.len() as u64 >= limits.max_entries {
                    return Err(ArchiveError::TooManyEntries {
                        limit: limits.max_entries,
                    });
                }
                let md = fs::symlink_metadata(&child_abs).map_err(io("stat", &child_abs))?;
                let ft = md.file_type();
                let mode = md.mode() & MODE_MASK;
                let mtime = FsTime::of(&md);
                if ft.is_dir() {
                    if depth + 1 > limits.max_depth {
                        return Err(ArchiveError::TooDeep {
                            path: child_abs,
                            limit: limits.max_depth,
                        });
                    }
                    archive.push_dir(child_rel.clone(), mode, mtime);
                    subdirs.push(child_rel);
                } else if ft.is_file() {
                    archive.capture_file(&child_abs, child_rel, &md, limits)?;
                } else if ft.is_symlink() {
                    let target = fs::read_link(&child_abs)
                        .map_err(io("read link", &child_abs))?
                        .into_os_string()
                        .into_string()
                        .map_err(|_| ArchiveError::NonUtf8 {
                            path: child_abs.clone(),
                        })?;
                    archive.push_symlink(child_rel, target, mtime);
                } else {
                    return Err(ArchiveError::UnsupportedFileType { path: child_abs });
                }
            }
            // Reverse so the stack pops subdirectories in name order.
            stack.extend(subdirs.into_iter().rev().map(|d| (d, depth + 1)));
        }
        Ok(archive)
    }

    fn capture_file(
        &mut self,
        abs: &Path,
        rel: String,
        md: &fs::Metadata,
        limits: &ArchiveLimits,
    ) -> Result<(), ArchiveError> {
        let len = md.len();
        let total = (self.data.len() as u64).saturating_add(len);
        if total > limits.max_total_bytes {
            return Err(ArchiveError::TooManyBytes {
                limit: limits.max_total_bytes,
            });
        }
        // O_NOFOLLOW: if the path was swapped for a symlink since the stat,
        // fail rather than archive whatever it points at.
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(abs)
            .map_err(|source| ArchiveError::Io {
                op: "open",
                path: abs.to_path_buf(),
                source,
            })?;
        let before = self.data.len();
        // Read at most one byte more than the stat said, to notice growth
        // without reading an unbounded amount.
        file.take(len.saturating_add(1))
            .read_to_end(&mut self.data)
            .map_err(|source| ArchiveError::Io {
                op: "read",
                path: abs.to_path_buf(),
                source,
            })?;
        if (self.data.len() - before) as u64 != len {
            self.data.truncate(before);
            return Err(ArchiveError::FileChanged {
                path: abs.to_path_buf(),
            });
        }
        self.entries.push(FsEntry {
            path: rel,
            kind: FsEntryKind::File { len },
            mode: md.mode() & MODE_MASK,
            mtime: FsTime::of(md),
        });
        Ok(())
    }

    /// Checks that the archive is safe to restore: valid relative paths, no
    /// duplicates, every parent listed earlier as a directory, valid symlink
    /// targets and mtimes, and file lengths that add up to the data.
    pub fn validate(&self) -> Result<(), ArchiveError> {
        let mut seen: HashSet<&str> = HashSet::with_capacity(self.entries.len());
        let mut dirs: HashSet<&str> = HashSet::new();
        let mut data_total = 0u64;
        for e in &self.entries {
            validate_path(&e.path)?;
            if !seen.insert(e.path.as_str()) {
                return Err(ArchiveError::DuplicatePath(e.path.clone()));
            }
            if let Some((parent, _)) = e.path.rsplit_once('/')
                && !dirs.contains(parent)
            {
                return Err(ArchiveError::ParentNotDirectory(e.path.clone()));
            }
            if e.mtime.to_system_time().is_none() {
                return Err(ArchiveError::InvalidTime(e.path.clone()));
            }
            match &e.kind {
                FsEntryKind::Dir => {
                    dirs.insert(e.path.as_str());
                }
                FsEntryKind::File { len } => {
                    data_total = data_total
                        .checked_add(*len)
                        .ok_or(ArchiveError::Corrupt("file lengths overflow"))?;
                }
                FsEntryKind::Symlink { target } => {
                    if target.is_empty() || target.contains('\0') {
                        return Err(ArchiveError::InvalidSymlinkTarget(e.path.clone()));
                    }
                }
            }
        }
        if let Some(root) = &self.root
            && root.mtime.to_system_time().is_none()
        {
            return Err(ArchiveError::InvalidTime(String::new()));
        }
        if data_total != self.data.len() as u64 {
            return Err(ArchiveError::Corrupt(
                "file lengths do not add up to the data length",
            ));
        }
        Ok(())
    }

    /// Recreates the archive inside `dir`, which must exist and be empty:
    /// contents, modes, symlink targets and mtimes (directories' last, after
    /// their children were created). Never writes outside `dir`.
    pub fn restore_into(&self, dir: &Path) -> Result<(), ArchiveError> {
        self.validate()?;
        self.restore_validated(dir)
    }

    /// The restore proper. Kept apart from validation so a test can show that
    /// cap-std alone already stops an escape through an archived symlink.
    fn restore_validated(&self, dir: &Path) -> Result<(), ArchiveError> {
        let io = |op: &'static str, path: &Path| {
            let path = dir.join(path);
            move |source| ArchiveError::Io { op, path, source }
        };
        let root =
            Dir::open_ambient_dir(dir, ambient_authority()).map_err(io("open", Path::new("")))?;
        if root
            .entries()
            .map_err(io("read directory", Path::new("")))?
            .next()
            .is_some()
        {
            return Err(ArchiveError::TargetNotEmpty(dir.to_path_buf()));
        }
        let spec = |t: FsTime| -> Result<SystemTimeSpec, ArchiveError> {
            let st = t
                .to_system_time()
                .ok_or(ArchiveError::InvalidTime(String::new()))?;
            Ok(SystemTimeSpec::Absolute(
                cap_std::time::SystemTime::from_std(st),
            ))
        };
        for (entry, contents) in self.iter() {
            let p = Path::new(&entry.path);
            match &entry.kind {
                FsEntryKind::Dir => root.create_dir(p).map_err(io("create directory", p))?,
                FsEntryKind::File { .. } => {
                    let mut opts = cap_std::fs::OpenOptions::new();
                    opts.write(true).create_new(true);
                    let mut f = root.open_with(p, &opts).map_err(io("create", p))?;
                    f.write_all(contents.unwrap_or(&[]))
                        .map_err(io("write", p))?;
                    f.set_permissions(perm(entry.mode))
                        .map_err(io("chmod", p))?;
                    drop(f);
                    root.set_times(p, None, Some(spec(entry.mtime)?))
                        .map_err(io("set mtime", p))?;
                }
                FsEntryKind::Symlink { target } => {
                    root.symlink_contents(target, p).map_err(io("symlink", p))?;
                    root.set_symlink_times(p, None, Some(spec(entry.mtime)?))
                        .map_err(io("set mtime", p))?;
                }
            }
        }
        // Children come after parents in the archive, so walking backwards
        // finishes every directory's contents before its own mtime is set
        // (creating a child would bump it) and before a restrictive mode could
        // lock the restore out of it.
        for entry in self.entries.iter().rev() {
            if entry.kind == FsEntryKind::Dir {
                let p = Path::new(&entry.path);
                root.set_permissions(p, perm(entry.mode))
                    .map_err(io("chmod", p))?;
                root.set_times(p, None, Some(spec(entry.mtime)?))
                    .map_err(io("set mtime", p))?;
            }
        }
        if let Some(meta) = &self.root {
            let st = meta
                .mtime
                .to_system_time()
                .ok_or(ArchiveError::InvalidTime(String::new()))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(meta.mode & MODE_MASK))
                .map_err(io("chmod", Path::new("")))?;
            // The root is the directory the caller named, so opening it by
            // its ambient path involves no archive-controlled resolution.
            fs::File::open(dir)
                .and_then(|d| d.set_modified(st))
                .map_err(io("set mtime", Path::new("")))?;
        }
        Ok(())
    }

    /// The Filesystem section's prefix (`index_len | index`) and the file data
    /// that follows it, so the encoder can write the data without copying.
    pub(crate) fn section_parts(&self) -> Result<(Vec<u8>, &[u8]), ArchiveError> {
        let index = bincode::serde::encode_to_vec(
            IndexRef {
                root: &self.root,
                entries: &self.entries,
            },
            bincode::config::standard(),
        )
        .map_err(ArchiveError::IndexEncode)?;
        let mut prefix = Vec::with_capacity(8 + index.len());
        prefix.extend_from_slice(&(index.len() as u64).to_le_bytes());
        prefix.extend_from_slice(&index);
        Ok((prefix, &self.data))
    }

    /// Parses and validates a Filesystem section.
    pub(crate) fn from_section(bytes: &[u8], max_entries: u64) -> Result<Self, ArchiveError> {
        let (len_bytes, rest) = bytes.split_first_chunk::<8>().ok_or(ArchiveError::Corrupt(
            "section shorter than its index length",
        ))?;
        let index_len = u64::from_le_bytes(*len_bytes);
        let index_len = usize::try_from(index_len)
            .ok()
            .filter(|&l| l <= rest.len())
            .ok_or(ArchiveError::Corrupt("index length beyond the section"))?;
        let (index_bytes, data) = rest.split_at(index_len);
        // The in-memory index may be larger than its varint encoding; four
        // times the encoded size bounds the decoder's allocations.
        let budget = (index_len as u64).saturating_mul(4).max(1 << 16);
        let (index, used): (Index, usize) =
            bincode_decode_bounded(index_bytes, budget).map_err(ArchiveError::IndexDecode)?;
        if used != index_len {
            return Err(ArchiveError::Corrupt("trailing bytes after the index"));
        }
        if index.entries.len() as u64 > max_entries {
            return Err(ArchiveError::TooManyEntries { limit: max_entries });
        }
        let archive = FsArchive {
            root: index.root,
            entries: index.entries,
            data: data.to_vec(),
        };
        archive.validate()?;
        Ok(archive)
    }
}

fn perm(mode: u32) -> cap_std::fs::Permissions {
    cap_std::fs::Permissions::from_std(fs::Permissions::from_mode(mode & MODE_MASK))
}

/// Checks one archive path: relative, `/`-separated, every component a
/// plain name (not empty, `.`, `..`, and without NUL).
fn validate_path(path: &str) -> Result<(), ArchiveError> {
    let bad = |reason| {
        Err(ArchiveError::InvalidPath {
            path: path.to_owned(),
            reason,
        })
    };
    if path.is_empty() {
        return bad("empty path");
    }
    if path.starts_with('/') {
        return bad("absolute path");
    }
    for comp in path.split('/') {
        match comp {
            "" => return bad("empty component"),
            "." => return bad("`.` component"),
            ".." => return bad("`..` component"),
            c if c.contains('\0') => return bad("NUL in name"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Second line of defence: with validation skipped, creating `a/x`
    /// through an archived symlink `a -> <outside>` still fails inside
    /// cap-std, and nothing appears outside.
    #[test]
    fn cap_std_stops_symlink_escape_without_validation() {
        let outside = tempfile::tempdir().expect("tempdir");
        let target = tempfile::tempdir().expect("tempdir");
        let z = FsTime { secs: 0, nanos: 0 };
        for link_target in [
            outside.path().to_str().expect("utf-8 temp path").to_owned(),
            "..".to_owned(),
        ] {
            let dst = tempfile::tempdir_in(target.path()).expect("tempdir");
            let mut a = FsArchive::new();
            a.push_symlink("a", link_target.clone(), z);
            a.push_file("a/x", 0o644, z, b"escaped");
            assert!(a.validate().is_err(), "validation must refuse it too");
            let r = a.restore_validated(dst.path());
            assert!(
                matches!(r, Err(ArchiveError::Io { op: "create", .. })),
                "{link_target}: {r:?}"
            );
            assert!(!outside.path().join("x").exists());
            assert!(!target.path().join("x").exists());
        }
    }

    #[test]
    fn path_rules() {
        for ok in ["a", "a/b", "a b/c.d", "..a", "a..", ".hidden"] {
            assert!(validate_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "/", "/a", "a/", "a//b", ".", "a/./b", "..", "a/..", "a\0b",
        ] {
            assert!(validate_path(bad).is_err(), "{bad:?}");
        }
    }
}
