//! Text utilities: `echo`, `printf`, `wc`, `head`, `tail`, `grep`, `sort`, `uniq`, `tr`, `tee`, `tac`, `base64`.

use std::fs;

use super::{lines, parse_flags, read_input};
use crate::exec::Shell;
use crate::io::{Io, errmsg};
use crate::regex::Regex;

/// Interprets backslash escapes (`echo -e`, `printf` formats and `%b`). Returns the text and whether `\c`
/// asked to stop all further output.
pub fn escapes(s: &str) -> (String, bool) {
    let cs: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < cs.len() {
        if cs[i] != '\\' || i + 1 >= cs.len() {
            out.push(cs[i]);
            i += 1;
            continue;
        }
        i += 1;
        let c = cs[i];
        i += 1;
        match c {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'a' => out.push('\x07'),
            'b' => out.push('\x08'),
            'f' => out.push('\x0c'),
            'v' => out.push('\x0b'),
            'e' | 'E' => out.push('\x1b'),
            '\\' => out.push('\\'),
            'c' => return (out, true),
            '0'..='7' => {
                // `\0NNN` (echo) and `\NNN` (printf): up to three octal digits after an optional 0.
                let mut v = c.to_digit(8).unwrap_or(0);
                let max = if c == '0' { 3 } else { 2 };
                let mut n = 0;
                while n < max && i < cs.len() && cs[i].is_digit(8) {
                    v = v * 8 + cs[i].to_digit(8).unwrap_or(0);
                    i += 1;
                    n += 1;
                }
                out.push(char::from_u32(v & 0xff).unwrap_or('?'));
            }
            'x' => {
                let mut v = 0;
                let mut n = 0;
                while n < 2 && i < cs.len() && cs[i].is_ascii_hexdigit() {
                    v = v * 16 + cs[i].to_digit(16).unwrap_or(0);
                    i += 1;
                    n += 1;
                }
                if n == 0 {
                    out.push_str("\\x");
                } else {
                    out.push(char::from_u32(v).unwrap_or('?'));
                }
            }
            other => {
                out.push('\\');
                out.push(other);
            }
        }
    }
    (out, false)
}

/// `echo [-neE] ARGS...` (bash's builtin: no escapes unless `-e`).
pub fn echo(_sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let mut newline = true;
    let mut interpret = false;
    let mut i = 1;
    while let Some(a) = argv.get(i) {
        if a.len() < 2
            || !a.starts_with('-')
            || !a[1..].chars().all(|c| matches!(c, 'n' | 'e' | 'E'))
        {
            break;
        }
        for c in a[1..].chars() {
            match c {
                'n' => newline = false,
                'e' => interpret = true,
                _ => interpret = false,
            }
        }
        i += 1;
    }
    let mut text = argv.get(i..).unwrap_or_default().join(" ");
    if interpret {
        let (t, stop) = escapes(&text);
        text = t;
        if stop {
            newline = false;
        }
    }
    if newline {
        text.push('\n');
    }
    io.print(&text);
    0
}

/// Parses a `printf` numeric argument like bash: decimal, `0x` hex, leading-zero octal, `'c` char code.
fn printf_int(arg: &str, io: &Io, status: &mut i32) -> i64 {
    let t = arg.trim();
    if t.is_empty() {
        return 0;
    }
    if let Some(c) = t.strip_prefix(['\'', '"']) {
        return c.chars().next().map_or(0, |c| i64::from(u32::from(c)));
    }
    let (neg, digits) = match t.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let parsed = if let Some(h) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        i64::from_str_radix(h, 16)
    } else if digits.len() > 1 && digits.starts_with('0') {
        i64::from_str_radix(&digits[1..], 8)
    } else {
        digits.parse()
    };
    match parsed {
        Ok(v) => {
            if neg {
                -v
            } else {
                v
            }
        }
        Err(_) => {
            io.eprintln(&format!("sh: printf: {arg}: invalid number"));
            *status = 1;
            0
        }
    }
}

/// `%e` as C prints it: `2.500000e+00` (Rust's `{:e}` gives `2.5e0`).
fn c_exp(v: f64, precision: usize) -> String {
    let s = format!("{v:.precision$e}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

fn pad(s: String, width: usize, left: bool, zero: bool) -> String {
    let len = s.chars().count();
    if len >= width {
        return s;
    }
    let fill = width - len;
    if left {
        format!("{s}{}", " ".repeat(fill))
    } else if zero {
        match s.strip_prefix('-') {
            Some(rest) => format!("-{}{rest}", "0".repeat(fill)),
            None => format!("{}{s}", "0".repeat(fill)),
        }
    } else {
        format!("{}{s}", " ".repeat(fill))
    }
}

/// `printf FORMAT [ARGS...]`: the format is reused while arguments remain, like coreutils and bash.
pub fn printf(_sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let Some(fmt) = argv.get(1) else {
        io.eprintln("sh: printf: usage: printf [-v var] format [arguments]");
        return 2;
    };
    let fmt: Vec<char> = fmt.chars().collect();
    let args = argv.get(2..).unwrap_or_default();
    let mut next = 0;
    let mut status = 0;
    let mut out = String::new();
    loop {
        let mut i = 0;
        let mut consumed = false;
        while i < fmt.len() {
            let c = fmt[i];
            if c == '\\' {
                // Find the end of the escape (octal or hex digits may follow) and reuse the echo -e decoder.
                let mut j = (i + 2).min(fmt.len());
                let (max, radix) = match fmt.get(i + 1) {
                    Some('0'..='7') => (i + 5, 8),
                    Some('x') => (i + 4, 16),
                    _ => (j, 10),
                };
                while j < fmt.len() && j < max && fmt[j].is_digit(radix) {
                    j += 1;
                }
                let (s, stop) = escapes(&fmt[i..j].iter().collect::<String>());
                out.push_str(&s);
                if stop {
                    io.print(&out);
                    return status;
                }
                i = j;
                continue;
            }
            if c != '%' {
                out.push(c);
                i += 1;
                continue;
            }
            i += 1;
            if fmt.get(i) == Some(&'%') {
                out.push('%');
                i += 1;
                continue;
            }
            let (mut left, mut zero, mut plus) = (false, false, false);
            while let Some(&f) = fmt.get(i) {
                match f {
                    '-' => left = true,
                    '0' => zero = true,
                    '+' => plus = true,
                    ' ' | '#' => {}
                    _ => break,
                }
                i += 1;
            }
            let mut width = 0usize;
            while let Some(d) = fmt.get(i).and_then(|c| c.to_digit(10)) {
                width = width
                    .saturating_mul(10)
                    .saturating_add(d as usize)
                    .min(4096);
                i += 1;
            }
            let mut precision: Option<usize> = None;
            if fmt.get(i) == Some(&'.') {
                i += 1;
                let mut p = 0usize;
                while let Some(d) = fmt.get(i).and_then(|c| c.to_digit(10)) {
                    p = p.saturating_mul(10).saturating_add(d as usize).min(4096);
                    i += 1;
                }
                precision = Some(p);
            }
            let Some(&conv) = fmt.get(i) else {
                io.eprintln("sh: printf: missing format character");
                io.print(&out);
                return 1;
            };
            i += 1;
            let arg = args.get(next).map(String::as_str);
            if args.get(next).is_some() {
                next += 1;
                consumed = true;
            }
            let arg = arg.unwrap_or("");
            let s = match conv {
                's' => {
                    let mut s = arg.to_string();
                    if let Some(p) = precision {
                        s = s.chars().take(p).collect();
                    }
                    pad(s, width, left, false)
                }
                'b' => pad(escapes(arg).0, width, left, false),
                'c' => pad(
                    arg.chars().next().map(String::from).unwrap_or_default(),
                    width,
                    left,
                    false,
                ),
                'd' | 'i' | 'u' => {
                    let v = printf_int(arg, io, &mut status);
                    let s = if plus && v >= 0 {
                        format!("+{v}")
                    } else {
                        v.to_string()
                    };
                    pad(s, width, left, zero)
                }
                'x' => pad(
                    format!("{:x}", printf_int(arg, io, &mut status)),
                    width,
                    left,
                    zero,
                ),
                'X' => pad(
                    format!("{:X}", printf_int(arg, io, &mut status)),
                    width,
                    left,
                    zero,
                ),
                'o' => pad(
                    format!("{:o}", printf_int(arg, io, &mut status)),
                    width,
                    left,
                    zero,
                ),
                'f' | 'F' | 'e' | 'g' => {
                    let v: f64 = if arg.is_empty() {
                        0.0
                    } else {
                        arg.trim().parse().unwrap_or_else(|_| {
                            io.eprintln(&format!("sh: printf: {arg}: invalid number"));
                            status = 1;
                            0.0
                        })
                    };
                    let s = match conv {
                        'e' => c_exp(v, precision.unwrap_or(6)),
                        'g' => format!("{v}"),
                        _ => format!("{:.*}", precision.unwrap_or(6), v),
                    };
                    pad(s, width, left, zero)
                }
                other => {
                    io.eprintln(&format!("sh: printf: `{other}': invalid format character"));
                    io.print(&out);
                    return 1;
                }
            };
            out.push_str(&s);
        }
        if !consumed || next >= args.len() {
            break;
        }
    }
    io.print(&out);
    status
}

#[derive(Default, Clone, Copy)]
struct Counts {
    lines: usize,
    words: usize,
    bytes: usize,
    chars: usize,
}

fn count(data: &[u8]) -> Counts {
    let s = String::from_utf8_lossy(data);
    Counts {
        lines: data.iter().filter(|&&b| b == b'\n').count(),
        words: s.split_whitespace().count(),
        bytes: data.len(),
        chars: s.chars().count(),
    }
}

/// `wc [-lwcm] [FILE...]`, aligned like coreutils: one count of one input prints bare, otherwise columns
/// are as wide as the largest number (at least 7 when reading stdin, whose size is unknown in advance).
pub fn wc(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let a = match parse_flags("wc", argv, "lwcmL", io) {
        Ok(a) => a,
        Err(s) => return s,
    };
    let mut sel: Vec<char> = ['l', 'w', 'm', 'c']
        .into_iter()
        .filter(|&c| a.has(c))
        .collect();
    if sel.is_empty() {
        sel = vec!['l', 'w', 'c'];
    }
    let files = if a.operands.is_empty() {
        vec![None]
    } else {
        a.operands.iter().map(|s| Some(s.as_str())).collect()
    };
    let mut status = 0;
    let mut rows: Vec<(Counts, Option<String>)> = Vec::new();
    let mut total = Counts::default();
    let mut stdin_used = false;
    for f in &files {
        let data = match f {
            None | Some("-") => {
                stdin_used = true;
                Ok(io.stdin.read_all())
            }
            Some(p) => read_input(sh, p, io),
        };
        match data {
            Ok(d) => {
                let c = count(&d);
                total.lines += c.lines;
                total.words += c.words;
                total.bytes += c.bytes;
                total.chars += c.chars;
                rows.push((c, f.map(str::to_string)));
            }
            Err(e) => {
                io.eprintln(&format!("wc: {}: {e}", f.unwrap_or("-")));
                status = 1;
            }
        }
    }
    if files.len() > 1 {
        rows.push((total, Some("total".into())));
    }
    let width = if sel.len() == 1 && files.len() == 1 {
        1
    } else {
        let w = total.bytes.max(total.lines).to_string().len();
        if stdin_used { w.max(7) } else { w }
    };
    for (c, name) in rows {
        let nums: Vec<String> = sel
            .iter()
            .map(|k| {
                let v = match k {
                    'l' => c.lines,
                    'w' => c.words,
                    'm' => c.chars,
                    _ => c.bytes,
                };
                format!("{v:>width$}")
            })
            .collect();
        let mut line = nums.join(" ");
        if let Some(n) = name {
            line.push(' ');
            line.push_str(&n);
        }
        io.print(&format!("{line}\n"));
    }
    status
}

/// Parses the `-n N` / `-N` / `-nN` count of head and tail; returns (count, from_start for `+N`, operands).
fn head_tail_args(
    name: &str,
    argv: &[String],
    io: &Io,
) -> Result<(usize, bool, bool, Vec<String>), i32> {
    let mut n = 10usize;
    let mut from_start = false;
    let mut bytes = false;
    let mut ops = Vec::new();
    let mut i = 1;
    while i < argv.len() {
        let a = &argv[i];
        let value = if a == "-n" || a == "-c" {
            bytes = a == "-c";
            i += 1;
            argv.get(i).cloned()
        } else if let Some(v) = a.strip_prefix("-n").or_else(|| a.strip_prefix("--lines=")) {
            Some(v.to_string())
        } else if let Some(v) = a.strip_prefix("-c") {
            bytes = true;
            Some(v.to_string())
        } else if a.len() > 1 && a.starts_with('-') && a[1..].chars().all(|c| c.is_ascii_digit()) {
            Some(a[1..].to_string())
        } else if a == "-q" || a == "-v" || a == "-f" || a == "-F" {
            // `tail -f` cannot follow a file that nothing else writes while the sandbox runs one command.
            i += 1;
            continue;
        } else {
            ops.push(a.clone());
            i += 1;
            continue;
        };
        let Some(v) = value else {
            io.eprintln(&format!("{name}: option requires an argument -- 'n'"));
            return Err(1);
        };
        from_start = v.starts_with('+');
        match v.trim_start_matches(['+', '-']).parse() {
            Ok(k) => n = k,
            Err(_) => {
                io.eprintln(&format!(
                    "{name}: invalid number of {}: '{v}'",
                    if bytes { "bytes" } else { "lines" }
                ));
                return Err(1);
            }
        }
        i += 1;
    }
    Ok((n, from_start, bytes, ops))
}

fn head_tail(sh: &mut Shell, argv: &[String], io: &Io, tail: bool) -> i32 {
    let name = if tail { "tail" } else { "head" };
    let (n, from_start, bytes, ops) = match head_tail_args(name, argv, io) {
        Ok(x) => x,
        Err(s) => return s,
    };
    let files = if ops.is_empty() {
        vec!["-".to_string()]
    } else {
        ops
    };
    let mut status = 0;
    if !tail && !bytes && files.len() == 1 && files[0] == "-" {
        // Lines of stdin are read as they come and no further: `producer | head` ends when the lines
        // are there, and the producer then finds its pipe broken, as with coreutils' `head`.
        for _ in 0..n {
            match io.stdin.read_line_raw() {
                Some(line) => io.out.put(&line),
                None => break,
            }
        }
        return 0;
    }
    for (k, f) in files.iter().enumerate() {
        let data = match read_input(sh, f, io) {
            Ok(d) => d,
            Err(e) => {
                io.eprintln(&format!("{name}: cannot open '{f}' for reading: {e}"));
                status = 1;
                continue;
            }
        };
        if files.len() > 1 {
            let shown = if f == "-" { "standard input" } else { f };
            io.print(&format!(
                "{}==> {shown} <==\n",
                if k > 0 { "\n" } else { "" }
            ));
        }
        if bytes {
            let part = match (tail, from_start) {
                (false, _) => &data[..n.min(data.len())],
                (true, true) => &data[n.saturating_sub(1).min(data.len())..],
                (true, false) => &data[data.len().saturating_sub(n)..],
            };
            io.out.put(part);
            continue;
        }
        // Split keeping terminators so a missing final newline is preserved.
        let mut pieces: Vec<&[u8]> = data.split_inclusive(|&b| b == b'\n').collect();
        if tail {
            let start = if from_start {
                n.saturating_sub(1)
            } else {
                pieces.len().saturating_sub(n)
            };
            pieces = pieces.split_off(start.min(pieces.len()));
        } else {
            pieces.truncate(n);
        }
        for p in pieces {
            io.out.put(p);
        }
    }
    status
}

/// `head [-n N|-N] [FILE...]`
pub fn head(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    head_tail(sh, argv, io, false)
}

/// `tail [-n N|-N|-n +N] [FILE...]`
pub fn tail(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    head_tail(sh, argv, io, true)
}

fn walk(sh: &Shell, path: &str, out: &mut Vec<String>) {
    let host = sh.host_path(path);
    if host.is_dir() {
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
                walk(sh, &child, out);
            }
        }
    } else {
        out.push(path.to_string());
    }
}

/// `grep [-ivncrlqsEFHh] [-e PATTERN] PATTERN [FILE...]`: exit 0 on a match, 1 on none, 2 on error.
pub fn grep(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let mut flags = String::new();
    let mut patterns = Vec::new();
    let mut ops = Vec::new();
    let mut i = 1;
    let mut only_operands = false;
    while i < argv.len() {
        let a = &argv[i];
        if only_operands || !a.starts_with('-') || a.len() < 2 {
            ops.push(a.clone());
        } else if a == "--" {
            only_operands = true;
        } else if a == "-e" {
            i += 1;
            match argv.get(i) {
                Some(p) => patterns.push(p.clone()),
                None => {
                    io.eprintln("grep: option requires an argument -- 'e'");
                    return 2;
                }
            }
        } else {
            for c in a[1..].chars() {
                if !"ivncrRlqsEFGHh".contains(c) {
                    io.eprintln(&format!("grep: invalid option -- '{c}'"));
                    io.eprintln("Usage: grep [OPTION]... PATTERNS [FILE]...");
                    return 2;
                }
                flags.push(c);
            }
        }
        i += 1;
    }
    let has = |c: char| flags.contains(c);
    if patterns.is_empty() {
        if ops.is_empty() {
            io.eprintln("Usage: grep [OPTION]... PATTERNS [FILE]...");
            io.eprintln("Try 'grep --help' for more information.");
            return 2;
        }
        patterns.push(ops.remove(0));
    }
    let regexes: Vec<Regex> = patterns
        .iter()
        .flat_map(|p| p.split('\n').map(str::to_string).collect::<Vec<_>>())
        .map(|p| Regex::new(&p, has('E'), has('F'), has('i')))
        .collect();
    let recursive = has('r') || has('R');
    let mut files = Vec::new();
    if ops.is_empty() {
        if recursive {
            walk(sh, ".", &mut files)
        } else {
            files.push("-".to_string())
        }
        if recursive {
            files = files
                .into_iter()
                .map(|f| f.trim_start_matches("./").to_string())
                .collect();
        }
    } else {
        for op in &ops {
            if recursive {
                walk(sh, op, &mut files)
            } else {
                files.push(op.clone())
            }
        }
    }
    let show_names = (files.len() > 1 || recursive) && !has('h') || has('H');
    let mut status = 1;
    let mut error = false;
    for f in &files {
        let data = match read_input(sh, f, io) {
            Ok(d) => d,
            Err(e) => {
                if !has('s') {
                    io.eprintln(&format!("grep: {f}: {e}"));
                }
                error = true;
                continue;
            }
        };
        let shown = if f == "-" {
            "(standard input)"
        } else {
            f.as_str()
        };
        let mut n = 0;
        for (lineno, line) in lines(&data).iter().enumerate() {
            let hit = regexes.iter().any(|r| r.is_match(line));
            if hit == has('v') {
                continue;
            }
            n += 1;
            status = 0;
            if has('q') {
                return 0;
            }
            if has('c') || has('l') {
                continue;
            }
            let mut prefix = String::new();
            if show_names {
                prefix.push_str(shown);
                prefix.push(':');
            }
            if has('n') {
                prefix.push_str(&format!("{}:", lineno + 1));
            }
            io.print(&format!("{prefix}{line}\n"));
        }
        if has('c') {
            io.print(&if show_names {
                format!("{shown}:{n}\n")
            } else {
                format!("{n}\n")
            });
        } else if has('l') && n > 0 {
            io.print(&format!("{shown}\n"));
        }
    }
    if error && (status != 0 || !has('q')) {
        2
    } else {
        status
    }
}

/// The leading number of a line for `sort -n` (blanks skipped; no number sorts as 0).
fn numeric_key(s: &str) -> f64 {
    let t = s.trim_start();
    let mut end = 0;
    for (i, c) in t.char_indices() {
        if c.is_ascii_digit() || c == '.' || (i == 0 && c == '-') {
            end = i + c.len_utf8();
        } else {
            break;
        }
    }
    t[..end].parse().unwrap_or(0.0)
}

/// `sort [-r] [-n] [-u] [-f] [FILE...]`
pub fn sort(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    // `-k N[,M]` and `-t SEP` take values, so pull them out before the generic flag parser.
    let mut key: Option<(usize, usize)> = None;
    let mut sep: Option<char> = None;
    let mut rest = vec![argv[0].clone()];
    let mut i = 1;
    while i < argv.len() {
        let a = &argv[i];
        let value = |i: &mut usize, flag: &str| -> Option<String> {
            if a == flag {
                *i += 1;
                argv.get(*i).cloned()
            } else {
                a.strip_prefix(flag).map(str::to_string)
            }
        };
        if a.starts_with("-k") {
            let spec = value(&mut i, "-k").unwrap_or_default();
            let field = |s: &str| {
                s.split('.').next().and_then(|n| {
                    n.trim_end_matches(|c: char| c.is_ascii_alphabetic())
                        .parse::<usize>()
                        .ok()
                })
            };
            let (from, to) = match spec.split_once(',') {
                Some((f, t)) => (field(f), field(t)),
                None => (field(&spec), Some(usize::MAX)),
            };
            match (from, to) {
                (Some(f), Some(t)) if f >= 1 && t >= f => key = Some((f, t)),
                _ => {
                    io.eprintln(&format!(
                        "sort: invalid number at field start: invalid count at start of '{spec}'"
                    ));
                    return 2;
                }
            }
            // Modifier letters such as `-k2n` apply to the whole sort here.
            if spec.contains('n') {
                rest.push("-n".into());
            }
            if spec.contains('r') {
                rest.push("-r".into());
            }
        } else if a.starts_with("-t") {
            sep = value(&mut i, "-t").and_then(|v| v.chars().next());
        } else {
            rest.push(a.clone());
        }
        i += 1;
    }
    let a = match parse_flags("sort", &rest, "rnufbs", io) {
        Ok(a) => a,
        Err(s) => return s,
    };
    let files = if a.operands.is_empty() {
        vec!["-".to_string()]
    } else {
        a.operands.clone()
    };
    let mut all = Vec::new();
    for f in &files {
        match read_input(sh, f, io) {
            Ok(d) => all.extend(lines(&d)),
            Err(e) => {
                io.eprintln(&format!("sort: cannot read: {f}: {e}"));
                return 2;
            }
        }
    }
    let numeric = a.has('n');
    let fold = a.has('f');
    let extract = |line: &str| -> String {
        let Some((from, to)) = key else {
            return line.to_string();
        };
        let fields: Vec<&str> = match sep {
            Some(c) => line.split(c).collect(),
            None => line.split_whitespace().collect(),
        };
        let end = to.min(fields.len());
        if from > end {
            return String::new();
        }
        fields[from - 1..end].join(&sep.map_or(" ".to_string(), String::from))
    };
    let key_cmp = |x: &String, y: &String| {
        let (x, y) = (&extract(x), &extract(y));
        if numeric {
            numeric_key(x)
                .partial_cmp(&numeric_key(y))
                .unwrap_or(std::cmp::Ordering::Equal)
        } else if fold {
            x.to_uppercase().cmp(&y.to_uppercase())
        } else {
            x.cmp(y)
        }
    };
    all.sort_by(|x, y| key_cmp(x, y).then_with(|| x.cmp(y)));
    if a.has('u') {
        all.dedup_by(|x, y| key_cmp(x, y).is_eq());
    }
    if a.has('r') {
        all.reverse();
    }
    for l in all {
        io.print(&format!("{l}\n"));
    }
    0
}

/// `uniq [-c] [-d] [-u] [INPUT]`
pub fn uniq(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let a = match parse_flags("uniq", argv, "cdui", io) {
        Ok(a) => a,
        Err(s) => return s,
    };
    let f = a.operands.first().cloned().unwrap_or_else(|| "-".into());
    let data = match read_input(sh, &f, io) {
        Ok(d) => d,
        Err(e) => {
            io.eprintln(&format!("uniq: {f}: {e}"));
            return 1;
        }
    };
    let mut groups: Vec<(String, usize)> = Vec::new();
    for l in lines(&data) {
        match groups.last_mut() {
            Some((prev, n))
                if *prev == l || (a.has('i') && prev.to_lowercase() == l.to_lowercase()) =>
            {
                *n += 1
            }
            _ => groups.push((l, 1)),
        }
    }
    for (l, n) in groups {
        if (a.has('d') && n < 2) || (a.has('u') && n > 1) {
            continue;
        }
        if a.has('c') {
            io.print(&format!("{n:>7} {l}\n"));
        } else {
            io.print(&format!("{l}\n"));
        }
    }
    0
}

/// Expands a `tr` set: ranges `a-z`, escapes and `[:class:]` names.
fn tr_set(s: &str) -> Vec<char> {
    let (s, _) = escapes(s);
    let mut s = s;
    for (name, chars) in [
        ("[:lower:]", "abcdefghijklmnopqrstuvwxyz"),
        ("[:upper:]", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
        ("[:digit:]", "0123456789"),
        ("[:space:]", " \t\n\r\x0b\x0c"),
        ("[:blank:]", " \t"),
    ] {
        s = s.replace(name, chars);
    }
    let cs: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < cs.len() {
        if i + 2 < cs.len() && cs[i + 1] == '-' && cs[i] <= cs[i + 2] {
            out.extend(cs[i]..=cs[i + 2]);
            i += 3;
        } else {
            out.push(cs[i]);
            i += 1;
        }
    }
    out
}

/// `tr [-d] [-s] SET1 [SET2]`
pub fn tr(_sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let a = match parse_flags("tr", argv, "dsc", io) {
        Ok(a) => a,
        Err(s) => return s,
    };
    let need = if a.has('d') || (a.has('s') && a.operands.len() == 1) {
        1
    } else {
        2
    };
    if a.operands.len() < need {
        io.eprintln("tr: missing operand");
        io.eprintln("Try 'tr --help' for more information.");
        return 1;
    }
    let set1 = tr_set(&a.operands[0]);
    let set2 = a.operands.get(1).map(|s| tr_set(s)).unwrap_or_default();
    let input = String::from_utf8_lossy(&io.stdin.read_all()).into_owned();
    let mut out = String::with_capacity(input.len());
    let mut last: Option<char> = None;
    for c in input.chars() {
        let in1 = set1.contains(&c) != a.has('c');
        let mapped = if a.has('d') {
            if in1 {
                continue;
            }
            c
        } else if in1 && !set2.is_empty() {
            let idx = set1
                .iter()
                .position(|&x| x == c)
                .unwrap_or(set1.len().saturating_sub(1));
            set2.get(idx).or(set2.last()).copied().unwrap_or(c)
        } else {
            c
        };
        let squeeze_set = if set2.is_empty() || a.has('d') {
            &set1
        } else {
            &set2
        };
        if a.has('s') && last == Some(mapped) && squeeze_set.contains(&mapped) {
            continue;
        }
        last = Some(mapped);
        out.push(mapped);
    }
    io.print(&out);
    0
}

/// `tee [-a] [FILE...]`: copies stdin to stdout and to each file.
pub fn tee(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let a = match parse_flags("tee", argv, "a", io) {
        Ok(a) => a,
        Err(s) => return s,
    };
    let data = io.stdin.read_all();
    let mut status = 0;
    for f in &a.operands {
        let mut opts = fs::OpenOptions::new();
        opts.create(true);
        if a.has('a') {
            opts.append(true);
        } else {
            opts.write(true).truncate(true);
        }
        let res = opts
            .open(sh.host_path(f))
            .and_then(|mut file| std::io::Write::write_all(&mut file, &data));
        if let Err(e) = res {
            io.eprintln(&format!("tee: {f}: {}", errmsg(&e)));
            status = 1;
        }
    }
    io.out.put(&data);
    status
}

/// `tac [FILE...]`: lines in reverse order.
pub fn tac(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let files = if argv.len() > 1 {
        argv[1..].to_vec()
    } else {
        vec!["-".to_string()]
    };
    let mut status = 0;
    for f in &files {
        match read_input(sh, f, io) {
            Ok(d) => {
                for l in lines(&d).iter().rev() {
                    io.print(&format!("{l}\n"));
                }
            }
            Err(e) => {
                io.eprintln(&format!("tac: failed to open '{f}' for reading: {e}"));
                status = 1;
            }
        }
    }
    status
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes base64, ignoring whitespace (and, with `ignore_garbage`, any other non-alphabet byte).
pub fn b64_decode(text: &[u8], ignore_garbage: bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in text {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            b'\n' | b'\r' | b' ' | b'\t' => continue,
            _ if ignore_garbage => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// `base64 [-d] [-i] [-w COLS] [FILE]`: sandboxes receive binary files this way.
pub fn base64(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let (mut decode, mut garbage, mut wrap) = (false, false, 76usize);
    let mut file = "-".to_string();
    let mut i = 1;
    while let Some(a) = argv.get(i) {
        match a.as_str() {
            "-d" | "--decode" => decode = true,
            "-i" | "--ignore-garbage" => garbage = true,
            "-w" => {
                i += 1;
                wrap = argv.get(i).and_then(|v| v.parse().ok()).unwrap_or(76);
            }
            _ if a.starts_with("-w") => wrap = a[2..].parse().unwrap_or(76),
            _ if a.starts_with("--wrap=") => wrap = a[7..].parse().unwrap_or(76),
            _ => file = a.clone(),
        }
        i += 1;
    }
    let data = match read_input(sh, &file, io) {
        Ok(d) => d,
        Err(e) => {
            io.eprintln(&format!("base64: {file}: {e}"));
            return 1;
        }
    };
    if decode {
        return match b64_decode(&data, garbage) {
            Some(bytes) => {
                io.out.put(&bytes);
                0
            }
            None => {
                io.eprintln("base64: invalid input");
                1
            }
        };
    }
    let enc = b64_encode(&data);
    if wrap == 0 {
        io.print(&format!("{enc}\n"));
    } else {
        let chars: Vec<char> = enc.chars().collect();
        for line in chars.chunks(wrap) {
            io.print(&format!("{}\n", line.iter().collect::<String>()));
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences() {
        assert_eq!(escapes("a\\tb\\n"), ("a\tb\n".to_string(), false));
        assert_eq!(escapes("\\0101\\x41"), ("AA".to_string(), false));
        assert_eq!(escapes("x\\cy"), ("x".to_string(), true));
        assert_eq!(escapes("\\q"), ("\\q".to_string(), false));
    }

    #[test]
    fn tr_sets_expand_ranges_and_classes() {
        assert_eq!(tr_set("a-c"), vec!['a', 'b', 'c']);
        assert_eq!(tr_set("[:digit:]").len(), 10);
    }

    #[test]
    fn base64_round_trips() {
        for data in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"\x00\xff\x10binary",
        ] {
            assert_eq!(
                b64_decode(b64_encode(data).as_bytes(), false).as_deref(),
                Some(data)
            );
        }
        assert_eq!(b64_encode(b"hello"), "aGVsbG8=");
        assert_eq!(b64_decode(b"aGVs\nbG8=", false), Some(b"hello".to_vec()));
        assert_eq!(b64_decode(b"a*b", false), None);
    }

    #[test]
    fn numeric_keys() {
        assert_eq!(numeric_key(" 42abc"), 42.0);
        assert_eq!(numeric_key("-3.5"), -3.5);
        assert_eq!(numeric_key("x"), 0.0);
    }
}
