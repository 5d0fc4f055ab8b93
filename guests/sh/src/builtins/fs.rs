//! File-system utilities: `cat`, `ls`, `mkdir`, `rm`, `rmdir`, `cp`, `mv`, `touch`, `mktemp`, `du`.
//!
//! Messages and exit statuses follow GNU coreutils, because that is what users and agents expect to parse.

use std::fs;
use std::path::Path;
use std::time::SystemTime;

use super::{missing_operand, parse_flags, read_input};
use crate::exec::Shell;
use crate::io::{Io, errmsg};

/// `cat [-n] [FILE|-]...`
pub fn cat(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let a = match parse_flags("cat", argv, "nuA", io) {
        Ok(a) => a,
        Err(s) => return s,
    };
    let files = if a.operands.is_empty() {
        vec!["-".to_string()]
    } else {
        a.operands.clone()
    };
    let mut status = 0;
    let mut n = 0usize;
    for f in &files {
        match read_input(sh, f, io) {
            Ok(data) if a.has('n') => {
                let mut rest = &data[..];
                while !rest.is_empty() {
                    let end = rest
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(rest.len(), |p| p + 1);
                    n += 1;
                    io.print(&format!("{n:>6}\t"));
                    io.out.put(&rest[..end]);
                    rest = &rest[end..];
                }
            }
            Ok(data) => io.out.put(&data),
            Err(e) => {
                io.eprintln(&format!("cat: {f}: {e}"));
                status = 1;
            }
        }
    }
    status
}

/// The `ls -l` mode string of a file.
fn mode_string(meta: &fs::Metadata) -> String {
    let kind = if meta.is_dir() {
        'd'
    } else if meta.file_type().is_symlink() {
        'l'
    } else {
        '-'
    };
    #[cfg(unix)]
    let bits = {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode()
    };
    // WASI exposes no permission bits (and its read-only flag reflects rights, not the file): show what a
    // typical umask gives.
    #[cfg(not(unix))]
    let bits: u32 = if meta.is_dir() { 0o755 } else { 0o644 };
    let mut s = String::with_capacity(10);
    s.push(kind);
    for shift in [6, 3, 0] {
        let b = (bits >> shift) & 7;
        s.push(if b & 4 != 0 { 'r' } else { '-' });
        s.push(if b & 2 != 0 { 'w' } else { '-' });
        s.push(if b & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// `Nov 30 05:02`, the mtime column of `ls -l`.
fn mtime_string(meta: &fs::Metadata) -> String {
    let secs = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64);
    let t = super::misc::civil(secs);
    format!(
        "{} {:>2} {:02}:{:02}",
        super::misc::MONTHS[t.month as usize - 1],
        t.day,
        t.hour,
        t.min
    )
}

struct Entry {
    name: String,
    meta: Option<fs::Metadata>,
}

fn print_entries(entries: &[Entry], long: bool, io: &Io) {
    if !long {
        for e in entries {
            io.print(&format!("{}\n", e.name));
        }
        return;
    }
    let width = entries
        .iter()
        .filter_map(|e| e.meta.as_ref())
        .map(|m| m.len().to_string().len())
        .max()
        .unwrap_or(1);
    for e in entries {
        match &e.meta {
            Some(m) => {
                let nlink = if m.is_dir() { 2 } else { 1 };
                io.print(&format!(
                    "{} {nlink} user user {:>width$} {} {}\n",
                    mode_string(m),
                    m.len(),
                    mtime_string(m),
                    e.name
                ));
            }
            None => io.print(&format!("?????????? ? ? ? ? ? {}\n", e.name)),
        }
    }
}

/// `ls [-l] [-a] [-1] [FILE...]`: one name per line (stdout is never a terminal here), sorted bytewise.
pub fn ls(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let a = match parse_flags("ls", argv, "laA1hFRrtSd", io) {
        Ok(a) => a,
        Err(s) => return s,
    };
    let long = a.has('l');
    let all = a.has('a');
    let almost_all = a.has('A');
    let mut operands = if a.operands.is_empty() {
        vec![".".to_string()]
    } else {
        a.operands.clone()
    };
    operands.sort();
    let mut status = 0;
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for op in &operands {
        match fs::metadata(sh.host_path(op)) {
            Ok(m) if m.is_dir() && !a.has('d') => dirs.push(op.clone()),
            Ok(m) => files.push(Entry {
                name: op.clone(),
                meta: Some(m),
            }),
            Err(e) => {
                io.eprintln(&format!("ls: cannot access '{op}': {}", errmsg(&e)));
                status = 2;
            }
        }
    }
    print_entries(&files, long, io);
    let headers = operands.len() > 1;
    for (i, d) in dirs.iter().enumerate() {
        if headers {
            if i > 0 || !files.is_empty() {
                io.print("\n");
            }
            io.print(&format!("{d}:\n"));
        }
        let host = sh.host_path(d);
        let rd = match fs::read_dir(&host) {
            Ok(rd) => rd,
            Err(e) => {
                io.eprintln(&format!("ls: cannot open directory '{d}': {}", errmsg(&e)));
                status = 2;
                continue;
            }
        };
        let mut entries: Vec<Entry> = rd
            .filter_map(Result::ok)
            .map(|e| Entry {
                name: e.file_name().to_string_lossy().into_owned(),
                meta: fs::symlink_metadata(e.path()).ok(),
            })
            .filter(|e| all || almost_all || !e.name.starts_with('.'))
            .collect();
        if all {
            entries.push(Entry {
                name: ".".into(),
                meta: fs::metadata(&host).ok(),
            });
            entries.push(Entry {
                name: "..".into(),
                meta: fs::metadata(host.parent().unwrap_or(&host)).ok(),
            });
        }
        entries.sort_by(|x, y| x.name.cmp(&y.name));
        if a.has('r') {
            entries.reverse();
        }
        if long {
            let blocks: u64 = entries
                .iter()
                .filter_map(|e| e.meta.as_ref())
                .map(|m| m.len().div_ceil(4096) * 4)
                .sum();
            io.print(&format!("total {blocks}\n"));
        }
        print_entries(&entries, long, io);
    }
    status
}

/// `mkdir [-p] DIR...`
pub fn mkdir(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let a = match parse_flags("mkdir", argv, "pv", io) {
        Ok(a) => a,
        Err(s) => return s,
    };
    if a.operands.is_empty() {
        return missing_operand("mkdir", io);
    }
    let mut status = 0;
    for d in &a.operands {
        let host = sh.host_path(d);
        let res = if a.has('p') {
            if host.is_file() {
                Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists))
            } else {
                fs::create_dir_all(&host)
            }
        } else {
            fs::create_dir(&host)
        };
        if let Err(e) = res {
            io.eprintln(&format!(
                "mkdir: cannot create directory '{d}': {}",
                errmsg(&e)
            ));
            status = 1;
        }
    }
    status
}

/// `rm [-r] [-f] FILE...`
pub fn rm(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let a = match parse_flags("rm", argv, "rRfvid", io) {
        Ok(a) => a,
        Err(s) => return s,
    };
    let force = a.has('f');
    let recursive = a.has('r') || a.has('R');
    if a.operands.is_empty() {
        return if force { 0 } else { missing_operand("rm", io) };
    }
    let mut status = 0;
    for f in &a.operands {
        if sh.logical(f) == "/" {
            io.eprintln("rm: it is dangerous to operate recursively on '/'");
            io.eprintln("rm: use --no-preserve-root to override this failsafe");
            status = 1;
            continue;
        }
        let host = sh.host_path(f);
        let res = match fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() => {
                if recursive {
                    fs::remove_dir_all(&host)
                } else if a.has('d') {
                    fs::remove_dir(&host)
                } else {
                    io.eprintln(&format!("rm: cannot remove '{f}': Is a directory"));
                    status = 1;
                    continue;
                }
            }
            Ok(_) => fs::remove_file(&host),
            Err(e) if force && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => Err(e),
        };
        if let Err(e) = res {
            io.eprintln(&format!("rm: cannot remove '{f}': {}", errmsg(&e)));
            status = 1;
        }
    }
    status
}

/// `rmdir DIR...`
pub fn rmdir(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let a = match parse_flags("rmdir", argv, "pv", io) {
        Ok(a) => a,
        Err(s) => return s,
    };
    if a.operands.is_empty() {
        return missing_operand("rmdir", io);
    }
    let mut status = 0;
    for d in &a.operands {
        let host = sh.host_path(d);
        let res = if host.is_file() {
            Err(std::io::Error::from(std::io::ErrorKind::NotADirectory))
        } else {
            fs::remove_dir(&host)
        };
        if let Err(e) = res {
            io.eprintln(&format!("rmdir: failed to remove '{d}': {}", errmsg(&e)));
            status = 1;
        }
    }
    status
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    if from.is_dir() {
        if !to.is_dir() {
            fs::create_dir(to)?;
        }
        for e in fs::read_dir(from)? {
            let e = e?;
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        }
        Ok(())
    } else {
        fs::copy(from, to).map(|_| ())
    }
}

/// The destination of `cp`/`mv` for one source: into `dest` when it is a directory.
fn target_for(sh: &Shell, src: &str, dest: &str) -> std::path::PathBuf {
    let host = sh.host_path(dest);
    if host.is_dir() {
        let name = Path::new(src.trim_end_matches('/'))
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        host.join(name)
    } else {
        host
    }
}

/// Shared operand checks of `cp` and `mv`: returns (sources, destination).
fn two_or_more(
    name: &str,
    ops: &[String],
    sh: &Shell,
    io: &Io,
) -> Result<(Vec<String>, String), i32> {
    match ops {
        [] => Err(missing_operand(name, io)),
        [only] => {
            io.eprintln(&format!(
                "{name}: missing destination file operand after '{only}'"
            ));
            io.eprintln(&format!("Try '{name} --help' for more information."));
            Err(1)
        }
        [srcs @ .., dest] => {
            if srcs.len() > 1 && !sh.host_path(dest).is_dir() {
                io.eprintln(&format!("{name}: target '{dest}': Not a directory"));
                return Err(1);
            }
            Ok((srcs.to_vec(), dest.clone()))
        }
    }
}

/// `cp [-r] SRC... DEST`
pub fn cp(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let a = match parse_flags("cp", argv, "rRafpv", io) {
        Ok(a) => a,
        Err(s) => return s,
    };
    let (srcs, dest) = match two_or_more("cp", &a.operands, sh, io) {
        Ok(x) => x,
        Err(s) => return s,
    };
    let recursive = a.has('r') || a.has('R') || a.has('a');
    let mut status = 0;
    for src in &srcs {
        let from = sh.host_path(src);
        let meta = match fs::metadata(&from) {
            Ok(m) => m,
            Err(e) => {
                io.eprintln(&format!("cp: cannot stat '{src}': {}", errmsg(&e)));
                status = 1;
                continue;
            }
        };
        if meta.is_dir() && !recursive {
            io.eprintln(&format!("cp: -r not specified; omitting directory '{src}'"));
            status = 1;
            continue;
        }
        let to = target_for(sh, src, &dest);
        if meta.is_dir() && to.starts_with(&from) {
            io.eprintln(&format!(
                "cp: cannot copy a directory, '{src}', into itself, '{dest}'"
            ));
            status = 1;
            continue;
        }
        if let Err(e) = copy_tree(&from, &to) {
            io.eprintln(&format!(
                "cp: cannot create regular file '{dest}': {}",
                errmsg(&e)
            ));
            status = 1;
        }
    }
    status
}

/// `mv SRC... DEST`
pub fn mv(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let a = match parse_flags("mv", argv, "fvin", io) {
        Ok(a) => a,
        Err(s) => return s,
    };
    let (srcs, dest) = match two_or_more("mv", &a.operands, sh, io) {
        Ok(x) => x,
        Err(s) => return s,
    };
    let mut status = 0;
    for src in &srcs {
        let from = sh.host_path(src);
        if let Err(e) = fs::symlink_metadata(&from) {
            io.eprintln(&format!("mv: cannot stat '{src}': {}", errmsg(&e)));
            status = 1;
            continue;
        }
        let to = target_for(sh, src, &dest);
        if let Err(e) = fs::rename(&from, &to) {
            io.eprintln(&format!(
                "mv: cannot move '{src}' to '{dest}': {}",
                errmsg(&e)
            ));
            status = 1;
        }
    }
    status
}

/// `touch FILE...`: creates missing files and sets the modification time of existing ones to now.
pub fn touch(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let a = match parse_flags("touch", argv, "acm", io) {
        Ok(a) => a,
        Err(s) => return s,
    };
    if a.operands.is_empty() {
        io.eprintln("touch: missing file operand");
        io.eprintln("Try 'touch --help' for more information.");
        return 1;
    }
    let mut status = 0;
    for f in &a.operands {
        let host = sh.host_path(f);
        let res = if host.is_dir() {
            Ok(())
        } else {
            fs::OpenOptions::new()
                .create(!a.has('c'))
                .append(true)
                .open(&host)
                .and_then(|file| file.set_modified(SystemTime::now()))
        };
        match res {
            Ok(()) => {}
            Err(e) if a.has('c') && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                io.eprintln(&format!("touch: cannot touch '{f}': {}", errmsg(&e)));
                status = 1;
            }
        }
    }
    status
}

/// `mktemp [-d] [-p DIR] [TEMPLATE]`: creates a uniquely named file (or directory) and prints its path.
pub fn mktemp(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let mut dir_mode = false;
    let mut parent: Option<String> = None;
    let mut template: Option<String> = None;
    let mut i = 1;
    while let Some(a) = argv.get(i) {
        match a.as_str() {
            "-d" | "--directory" => dir_mode = true,
            "-p" | "--tmpdir" => {
                i += 1;
                parent = argv.get(i).cloned();
            }
            "-t" | "-q" | "-u" => {}
            _ => template = Some(a.clone()),
        }
        i += 1;
    }
    let template = template.unwrap_or_else(|| "tmp.XXXXXXXXXX".to_string());
    let xs = template.len() - template.trim_end_matches('X').len();
    if xs < 3 {
        io.eprintln(&format!("mktemp: too few X's in template '{template}'"));
        return 1;
    }
    let base = &template[..template.len() - xs];
    let dir = if template.contains('/') {
        String::new()
    } else {
        parent.unwrap_or_else(|| "/tmp".to_string())
    };
    // No randomness source is needed for uniqueness: retry with a time-seeded counter until creation succeeds.
    let mut seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    for _ in 0..100 {
        let suffix: String = (0..xs)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                CHARS[(seed >> 33) as usize % CHARS.len()] as char
            })
            .collect();
        let name = format!("{base}{suffix}");
        let path = if dir.is_empty() {
            name
        } else {
            format!("{}/{name}", dir.trim_end_matches('/'))
        };
        let host = sh.host_path(&path);
        let res = if dir_mode {
            fs::create_dir(&host)
        } else {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&host)
                .map(|_| ())
        };
        match res {
            Ok(()) => {
                io.print(&format!("{path}\n"));
                return 0;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                io.eprintln(&format!(
                    "mktemp: failed to create {} via template '{template}': {}",
                    if dir_mode { "directory" } else { "file" },
                    errmsg(&e)
                ));
                return 1;
            }
        }
    }
    io.eprintln(&format!(
        "mktemp: failed to create file via template '{template}': File exists"
    ));
    1
}

/// Disk usage in KiB of a tree, printing every directory (or only the total with `summary`).
fn du_walk(
    sh: &Shell,
    path: &str,
    summary: bool,
    human: bool,
    all: bool,
    io: &Io,
    depth: usize,
) -> u64 {
    let host = sh.host_path(path);
    let Ok(meta) = fs::symlink_metadata(&host) else {
        return 0;
    };
    // Apparent sizes rounded to 4 KiB blocks, the usual file-system allocation unit.
    let mut kib = meta.len().div_ceil(4096) * 4;
    if meta.is_dir() {
        kib = 4;
        if let Ok(rd) = fs::read_dir(&host) {
            let mut names: Vec<String> = rd
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for n in names {
                let child = if path.ends_with('/') {
                    format!("{path}{n}")
                } else {
                    format!("{path}/{n}")
                };
                kib += du_walk(sh, &child, summary, human, all, io, depth + 1);
            }
        }
    }
    if depth == 0 || (!summary && (meta.is_dir() || all)) {
        io.print(&format!(
            "{}\t{path}\n",
            if human {
                human_size(kib)
            } else {
                kib.to_string()
            }
        ));
    }
    kib
}

/// `4.0K`, `12M`: one decimal below 10, like `du -h`.
fn human_size(kib: u64) -> String {
    let mut v = kib as f64;
    for unit in ["K", "M", "G", "T"] {
        if v < 1024.0 {
            return if v < 10.0 {
                format!("{:.1}{unit}", (v * 10.0).ceil() / 10.0)
            } else {
                format!("{}{unit}", v.ceil())
            };
        }
        v /= 1024.0;
    }
    format!("{}P", v.ceil())
}

/// `du [-s] [-h] [-a] [PATH...]`
pub fn du(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let a = match parse_flags("du", argv, "shacxk", io) {
        Ok(a) => a,
        Err(s) => return s,
    };
    let paths = if a.operands.is_empty() {
        vec![".".to_string()]
    } else {
        a.operands.clone()
    };
    let mut status = 0;
    let mut total = 0;
    for p in &paths {
        if let Err(e) = fs::symlink_metadata(sh.host_path(p)) {
            io.eprintln(&format!("du: cannot access '{p}': {}", errmsg(&e)));
            status = 1;
            continue;
        }
        total += du_walk(sh, p, a.has('s'), a.has('h'), a.has('a'), io, 0);
    }
    if a.has('c') {
        io.print(&format!(
            "{}\ttotal\n",
            if a.has('h') {
                human_size(total)
            } else {
                total.to_string()
            }
        ));
    }
    status
}
