//! Tools that walk or fan out over many inputs: `find`, `xargs`, `cut`.

use std::fs;

use super::{lines, read_input};
use crate::exec::Shell;
use crate::glob;
use crate::io::{Io, errmsg};

/// One `find` test.
enum Test {
    Name(String, bool),
    Type(char),
    Not(Box<Test>),
}

impl Test {
    fn matches(&self, name: &str, meta: &fs::Metadata) -> bool {
        match self {
            Test::Name(p, false) => glob::matches(p, name),
            Test::Name(p, true) => glob::matches(&p.to_lowercase(), &name.to_lowercase()),
            Test::Type('d') => meta.is_dir(),
            Test::Type('f') => meta.is_file(),
            Test::Type('l') => meta.file_type().is_symlink(),
            Test::Type(_) => false,
            Test::Not(t) => !t.matches(name, meta),
        }
    }
}

struct Find<'a> {
    sh: &'a Shell,
    io: &'a Io,
    tests: Vec<Test>,
    min: usize,
    max: usize,
    status: i32,
}

impl Find<'_> {
    fn visit(&mut self, path: &str, depth: usize) {
        let host = self.sh.host_path(path);
        let meta = match fs::symlink_metadata(&host) {
            Ok(m) => m,
            Err(e) => {
                self.io.eprintln(&format!("find: '{path}': {}", errmsg(&e)));
                self.status = 1;
                return;
            }
        };
        let name = path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or(path);
        if depth >= self.min && self.tests.iter().all(|t| t.matches(name, &meta)) {
            self.io.print(&format!("{path}\n"));
        }
        if meta.is_dir() && depth < self.max {
            let Ok(rd) = fs::read_dir(&host) else {
                self.io
                    .eprintln(&format!("find: '{path}': Permission denied"));
                self.status = 1;
                return;
            };
            // Sorted, unlike GNU find's directory order, so output is reproducible across sandboxes.
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
                self.visit(&child, depth + 1);
            }
        }
    }
}

/// `find [PATH...] [-name P] [-iname P] [-type f|d|l] [-maxdepth N] [-mindepth N] [! TEST] [-print]`
pub fn find(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let mut paths = Vec::new();
    let mut tests = Vec::new();
    let (mut min, mut max) = (0, usize::MAX);
    let mut negate = false;
    let mut i = 1;
    while i < argv.len() {
        let a = argv[i].as_str();
        let mut value = || {
            i += 1;
            argv.get(i).cloned()
        };
        let test = match a {
            "!" | "-not" => {
                negate = !negate;
                i += 1;
                continue;
            }
            "-print" | "-a" | "-and" => {
                i += 1;
                continue;
            }
            "-name" | "-iname" => value().map(|v| Test::Name(v, a == "-iname")),
            "-type" => value().and_then(|v| v.chars().next()).map(Test::Type),
            "-maxdepth" | "-mindepth" => {
                let Some(n) = value().and_then(|v| v.parse::<usize>().ok()) else {
                    io.eprintln(&format!("find: invalid argument to {a}"));
                    return 1;
                };
                if a == "-maxdepth" {
                    max = n;
                } else {
                    min = n;
                }
                i += 1;
                continue;
            }
            _ if a.starts_with('-') && a.len() > 1 => {
                io.eprintln(&format!("find: unknown predicate '{a}'"));
                return 1;
            }
            _ => {
                paths.push(a.to_string());
                i += 1;
                continue;
            }
        };
        let Some(mut test) = test else {
            io.eprintln(&format!("find: missing argument to '{a}'"));
            return 1;
        };
        if std::mem::take(&mut negate) {
            test = Test::Not(Box::new(test));
        }
        tests.push(test);
        i += 1;
    }
    if paths.is_empty() {
        paths.push(".".into());
    }
    let mut f = Find {
        sh,
        io,
        tests,
        min,
        max,
        status: 0,
    };
    for p in &paths {
        f.visit(p, 0);
    }
    f.status
}

/// `xargs [-n N] [-I REPLACE] [COMMAND [ARGS...]]`: runs COMMAND (default `echo`) with words from stdin.
pub fn xargs(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let mut per = usize::MAX;
    let mut replace: Option<String> = None;
    let mut i = 1;
    while let Some(a) = argv.get(i) {
        match a.as_str() {
            "-n" => {
                i += 1;
                per = argv.get(i).and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
            }
            "-I" => {
                i += 1;
                replace = argv.get(i).cloned();
            }
            "-0" | "-r" | "--no-run-if-empty" => {}
            _ if a.starts_with("-n") && a.len() > 2 => per = a[2..].parse().unwrap_or(1).max(1),
            _ => break,
        }
        i += 1;
    }
    let mut cmd: Vec<String> = argv.get(i..).unwrap_or_default().to_vec();
    if cmd.is_empty() {
        cmd.push("echo".into());
    }
    let input = io.stdin.read_all();
    let sub = Io {
        stdin: crate::io::Input::bytes(Vec::new()),
        out: io.out.clone(),
        err: io.err.clone(),
    };
    let mut status = 0;
    let mut run = |sh: &mut Shell, argv: Vec<String>| {
        let s = sh.run_argv(&argv, &sub);
        if s != 0 {
            status = 123;
        }
    };
    if let Some(r) = replace {
        for line in lines(&input).into_iter().filter(|l| !l.trim().is_empty()) {
            run(sh, cmd.iter().map(|c| c.replace(&r, &line)).collect());
        }
        return status;
    }
    let text = String::from_utf8_lossy(&input);
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.is_empty() {
        return 0;
    }
    for chunk in words.chunks(per.min(words.len())) {
        run(
            sh,
            cmd.iter()
                .cloned()
                .chain(chunk.iter().map(|w| w.to_string()))
                .collect(),
        );
    }
    status
}

/// Parses a `cut` list such as `1,3-5,7-` into inclusive 1-based ranges.
fn ranges(list: &str) -> Option<Vec<(usize, usize)>> {
    list.split(',')
        .map(|r| match r.split_once('-') {
            Some((a, b)) => {
                let lo = if a.is_empty() { 1 } else { a.parse().ok()? };
                let hi = if b.is_empty() {
                    usize::MAX
                } else {
                    b.parse().ok()?
                };
                (lo >= 1 && lo <= hi).then_some((lo, hi))
            }
            None => r.parse().ok().filter(|&n| n >= 1).map(|n| (n, n)),
        })
        .collect()
}

/// `cut -f LIST [-d DELIM] [-s] | -c LIST [FILE...]`
pub fn cut(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let (mut fields, mut chars, mut delim, mut only_delimited) = (None, None, '\t', false);
    let mut files = Vec::new();
    let mut i = 1;
    while let Some(a) = argv.get(i) {
        let mut take = |flag: &str| -> Option<String> {
            if a == flag {
                i += 1;
                argv.get(i).cloned()
            } else {
                a.strip_prefix(flag).map(str::to_string)
            }
        };
        if let Some(v) = take("-f") {
            fields = Some(v);
        } else if let Some(v) = take("-c").or_else(|| take("-b")) {
            chars = Some(v);
        } else if let Some(v) = take("-d") {
            delim = v.chars().next().unwrap_or('\t');
        } else if a == "-s" {
            only_delimited = true;
        } else {
            files.push(a.clone());
        }
        i += 1;
    }
    let (list, by_chars) = match (fields, chars) {
        (Some(f), None) => (f, false),
        (None, Some(c)) => (c, true),
        _ => {
            io.eprintln("cut: you must specify a list of bytes, characters, or fields");
            io.eprintln("Try 'cut --help' for more information.");
            return 1;
        }
    };
    let Some(rs) = ranges(&list) else {
        io.eprintln(&format!("cut: invalid field value '{list}'"));
        return 1;
    };
    let sel = |n: usize| rs.iter().any(|&(lo, hi)| lo <= n && n <= hi);
    if files.is_empty() {
        files.push("-".into());
    }
    let mut status = 0;
    for f in &files {
        let data = match read_input(sh, f, io) {
            Ok(d) => d,
            Err(e) => {
                io.eprintln(&format!("cut: {f}: {e}"));
                status = 1;
                continue;
            }
        };
        for line in lines(&data) {
            let out: String = if by_chars {
                line.chars()
                    .enumerate()
                    .filter(|(k, _)| sel(k + 1))
                    .map(|(_, c)| c)
                    .collect()
            } else if !line.contains(delim) {
                if only_delimited {
                    continue;
                }
                line
            } else {
                let d = delim.to_string();
                line.split(delim)
                    .enumerate()
                    .filter(|(k, _)| sel(k + 1))
                    .map(|(_, s)| s)
                    .collect::<Vec<_>>()
                    .join(&d)
            };
            io.print(&format!("{out}\n"));
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_ranges() {
        assert_eq!(
            ranges("1,3-4,6-"),
            Some(vec![(1, 1), (3, 4), (6, usize::MAX)])
        );
        assert_eq!(ranges("-2"), Some(vec![(1, 2)]));
        assert_eq!(ranges("0"), None);
        assert_eq!(ranges("x"), None);
    }
}
