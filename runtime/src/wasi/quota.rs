//! The disk quota of a sandbox root: bytes (sum of regular file lengths, each inode counted once) and files
//! (every directory entry under the root). Usage is computed by scanning the root once, when the first
//! [`super::WasiCtx`] using the quota is created, and then tracked by every operation that changes it. One
//! `Arc<DiskQuota>` can be shared by all the processes of a sandbox.
//!
//! Exceeding the byte limit is `ENOSPC`; exceeding the file limit is `EDQUOT` (the guest's libc reports them
//! as "no space left" and "disk quota exceeded").

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::errno::{Errno, GuestResult};

/// Limits and current usage of a sandbox root's disk space.
#[derive(Debug)]
pub struct DiskQuota {
    max_bytes: u64,
    max_files: u64,
    bytes: AtomicU64,
    files: AtomicU64,
    scanned: Mutex<bool>,
}

impl DiskQuota {
    /// A quota of at most `max_bytes` bytes and `max_files` files (use `u64::MAX` for no limit).
    pub fn new(max_bytes: u64, max_files: u64) -> Self {
        Self {
            max_bytes,
            max_files,
            bytes: AtomicU64::new(0),
            files: AtomicU64::new(0),
            scanned: Mutex::new(false),
        }
    }

    /// A quota that only tracks usage.
    pub fn unlimited() -> Self {
        Self::new(u64::MAX, u64::MAX)
    }

    /// Bytes currently used.
    pub fn used_bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }

    /// Files currently used.
    pub fn used_files(&self) -> u64 {
        self.files.load(Ordering::SeqCst)
    }

    /// Scans `root` and sets the usage, unless an earlier context sharing this quota already did.
    pub fn ensure_scanned(&self, root: &Path) -> std::io::Result<()> {
        let mut scanned = self.scanned.lock().unwrap_or_else(|p| p.into_inner());
        if !*scanned {
            let (bytes, files) = scan(root)?;
            self.bytes.store(bytes, Ordering::SeqCst);
            self.files.store(files, Ordering::SeqCst);
            *scanned = true;
        }
        Ok(())
    }

    fn reserve(counter: &AtomicU64, max: u64, n: u64, err: Errno) -> GuestResult<()> {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(n).filter(|t| *t <= max)
            })
            .map(|_| ())
            .map_err(|_| err)
    }

    fn release(counter: &AtomicU64, n: u64) {
        // Saturating: a file changed behind our back must not wrap the counter.
        let _ = counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
            Some(used.saturating_sub(n))
        });
    }

    /// Reserves `n` more bytes, or `ENOSPC`.
    pub fn reserve_bytes(&self, n: u64) -> GuestResult<()> {
        Self::reserve(&self.bytes, self.max_bytes, n, Errno::Nospc)
    }

    /// Gives back `n` bytes.
    pub fn release_bytes(&self, n: u64) {
        Self::release(&self.bytes, n)
    }

    /// Reserves one more file, or `EDQUOT`.
    pub fn reserve_file(&self) -> GuestResult<()> {
        Self::reserve(&self.files, self.max_files, 1, Errno::Dquot)
    }

    /// Gives back one file.
    pub fn release_file(&self) {
        Self::release(&self.files, 1)
    }
}

/// Sums regular file lengths (each inode once) and counts entries under `root`, without following symlinks.
fn scan(root: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    let (mut bytes, mut files) = (0u64, 0u64);
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.path().symlink_metadata()?;
            files += 1;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() && seen.insert((meta.dev(), meta.ino())) {
                bytes = bytes.saturating_add(meta.len());
            }
        }
    }
    Ok((bytes, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_counts_bytes_once_per_inode() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("a"), b"12345")?;
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b"))?;
        std::fs::create_dir(dir.path().join("d"))?;
        std::fs::write(dir.path().join("d/c"), b"123")?;
        let q = DiskQuota::new(10, 5);
        q.ensure_scanned(dir.path())?;
        assert_eq!((q.used_bytes(), q.used_files()), (8, 4));
        assert_eq!(q.reserve_bytes(3), Err(Errno::Nospc));
        assert_eq!(q.reserve_bytes(2), Ok(()));
        assert_eq!(q.reserve_file(), Ok(()));
        assert_eq!(q.reserve_file(), Err(Errno::Dquot));
        q.release_file();
        q.release_bytes(100);
        assert_eq!((q.used_bytes(), q.used_files()), (0, 4));
        // A second context sharing the quota does not rescan.
        q.ensure_scanned(dir.path())?;
        assert_eq!(q.used_bytes(), 0);
        Ok(())
    }
}
