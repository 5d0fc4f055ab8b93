//! Fuzzes path handling where guest-controlled paths meet the host filesystem. The WASI host's path
//! functions are not public, so this drives `FsArchive::restore_into` (the paths and symlink targets of a
//! blob's archive come from the guest) with archives of arbitrary entries, and checks that nothing is
//! written outside the target directory, whether the restore succeeds or not.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use stasis::snapshot::{FsArchive, FsTime};

/// Every path below `dir` (symlinks not followed), with what it is.
fn tree(dir: &Path, out: &mut Vec<(std::path::PathBuf, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let meta = std::fs::symlink_metadata(&p).expect("metadata");
        if meta.is_dir() {
            tree(&p, out);
            out.push((p, "dir".into()));
        } else if meta.file_type().is_symlink() {
            out.push((p.clone(), format!("-> {:?}", std::fs::read_link(&p).ok())));
        } else {
            out.push((p.clone(), format!("{:?}", std::fs::read(&p).ok())));
        }
    }
}

/// Gives the owner full access to every directory below `dir` (symlinks not followed).
fn unlock(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            unlock(&e.path());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let parent = tempfile::tempdir().expect("tempdir");
    let target = parent.path().join("target");
    std::fs::create_dir(&target).expect("target");
    std::fs::create_dir(parent.path().join("outside")).expect("outside");
    std::fs::write(parent.path().join("outside/keep"), b"keep").expect("keep");
    let mut before = Vec::new();
    tree(parent.path(), &mut before);
    before.retain(|(p, _)| !p.starts_with(&target));
    before.sort();

    // Entries are separated by 0xFF: a kind byte, then the path, then (symlinks) 0xFE and the target.
    let t = FsTime {
        secs: 1_000,
        nanos: 0,
    };
    let mut archive = FsArchive::new();
    for chunk in data.split(|&b| b == 0xFF).take(32) {
        let Some((&kind, rest)) = chunk.split_first() else {
            continue;
        };
        let (path, link) = match rest.iter().position(|&b| b == 0xFE) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &b""[..]),
        };
        let path = String::from_utf8_lossy(path).into_owned();
        match kind % 3 {
            0 => archive.push_dir(path, 0o700 | u32::from(kind) << 3, t),
            1 => archive.push_file(path, 0o600, t, link),
            _ => archive.push_symlink(path, String::from_utf8_lossy(link).into_owned(), t),
        }
    }
    let restored = archive.restore_into(&target);

    let mut after = Vec::new();
    tree(parent.path(), &mut after);
    after.retain(|(p, _)| !p.starts_with(&target));
    after.sort();
    assert_eq!(
        before, after,
        "restore ({restored:?}) wrote outside its target: {archive:?}"
    );
    // Directories restored without owner write permission would stop the temp dir's cleanup.
    unlock(&target);
});
