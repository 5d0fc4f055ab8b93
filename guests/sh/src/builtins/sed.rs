//! `sed`: the stream-editor subset people pipe through in sandboxes — `s///` (flags `g`, `p`, `i`, `N`),
//! `p`, `d`, `q`, line/`$`/regex addresses and ranges, `!`, `-n`, `-i`, `-E`.

use super::read_input;
use crate::exec::Shell;
use crate::io::{Io, errmsg};
use crate::regex::Regex;

#[derive(Debug, Clone)]
enum Addr {
    Line(usize),
    Last,
    Re(Regex),
}

#[derive(Debug, Clone)]
enum Cmd {
    Subst {
        re: Regex,
        repl: Vec<Repl>,
        global: bool,
        nth: usize,
        print: bool,
    },
    Print,
    Delete,
    Quit,
    LineNo,
}

/// A piece of a replacement: literal text or `&` (the whole match).
#[derive(Debug, Clone)]
enum Repl {
    Text(String),
    Whole,
}

#[derive(Debug, Clone)]
struct Command {
    from: Option<Addr>,
    to: Option<Addr>,
    negate: bool,
    cmd: Cmd,
    /// Inside an `a,b` range.
    active: bool,
}

struct ScriptParser<'a> {
    cs: Vec<char>,
    pos: usize,
    extended: bool,
    _src: &'a str,
}

impl ScriptParser<'_> {
    fn err(&self, what: &str) -> String {
        format!("-e expression #1, char {}: {what}", self.pos)
    }

    fn skip_blanks(&mut self) {
        while self
            .cs
            .get(self.pos)
            .is_some_and(|c| c.is_whitespace() || *c == ';')
        {
            self.pos += 1;
        }
    }

    /// Reads up to the unescaped delimiter; `\delim` becomes the delimiter itself.
    fn delimited(&mut self, delim: char) -> Result<String, String> {
        let mut out = String::new();
        loop {
            let Some(&c) = self.cs.get(self.pos) else {
                return Err(String::new());
            };
            self.pos += 1;
            if c == delim {
                return Ok(out);
            }
            if c == '\\' {
                match self.cs.get(self.pos) {
                    Some(&n) if n == delim => out.push(n),
                    Some(&n) => {
                        out.push('\\');
                        out.push(n);
                    }
                    None => return Err(String::new()),
                }
                self.pos += 1;
            } else {
                out.push(c);
            }
        }
    }

    fn addr(&mut self) -> Result<Option<Addr>, String> {
        match self.cs.get(self.pos) {
            Some(c) if c.is_ascii_digit() => {
                let start = self.pos;
                while self.cs.get(self.pos).is_some_and(char::is_ascii_digit) {
                    self.pos += 1;
                }
                let n: String = self.cs[start..self.pos].iter().collect();
                Ok(Some(Addr::Line(
                    n.parse().map_err(|_| self.err("invalid line number"))?,
                )))
            }
            Some('$') => {
                self.pos += 1;
                Ok(Some(Addr::Last))
            }
            Some('/') => {
                self.pos += 1;
                let re = self
                    .delimited('/')
                    .map_err(|_| self.err("unterminated address regex"))?;
                Ok(Some(Addr::Re(Regex::new(&re, self.extended, false, false))))
            }
            _ => Ok(None),
        }
    }

    fn parse(&mut self) -> Result<Vec<Command>, String> {
        let mut cmds = Vec::new();
        loop {
            self.skip_blanks();
            if self.pos >= self.cs.len() {
                return Ok(cmds);
            }
            let from = self.addr()?;
            let mut to = None;
            if from.is_some() && self.cs.get(self.pos) == Some(&',') {
                self.pos += 1;
                to = self.addr()?;
                if to.is_none() {
                    return Err(self.err("unexpected `,'"));
                }
            }
            let mut negate = false;
            while self.cs.get(self.pos) == Some(&'!') {
                negate = true;
                self.pos += 1;
            }
            let Some(&c) = self.cs.get(self.pos) else {
                return Err(self.err("missing command"));
            };
            self.pos += 1;
            let cmd = match c {
                'p' => Cmd::Print,
                'd' => Cmd::Delete,
                'q' => Cmd::Quit,
                '=' => Cmd::LineNo,
                's' => {
                    let Some(&delim) = self.cs.get(self.pos) else {
                        return Err(self.err("unterminated `s' command"));
                    };
                    self.pos += 1;
                    let re = self
                        .delimited(delim)
                        .map_err(|_| self.err("unterminated `s' command"))?;
                    let repl = self
                        .delimited(delim)
                        .map_err(|_| self.err("unterminated `s' command"))?;
                    let (mut global, mut nth, mut print, mut icase) = (false, 1, false, false);
                    while let Some(&f) = self.cs.get(self.pos) {
                        match f {
                            'g' => global = true,
                            'p' => print = true,
                            'i' | 'I' => icase = true,
                            d if d.is_ascii_digit() => {
                                nth = d.to_digit(10).map_or(1, |d| d as usize).max(1)
                            }
                            _ => break,
                        }
                        self.pos += 1;
                    }
                    Cmd::Subst {
                        re: Regex::new(&re, self.extended, false, icase),
                        repl: parse_repl(&repl),
                        global,
                        nth,
                        print,
                    }
                }
                other => return Err(self.err(&format!("unknown command: `{other}'"))),
            };
            cmds.push(Command {
                from,
                to,
                negate,
                cmd,
                active: false,
            });
        }
    }
}

fn parse_repl(s: &str) -> Vec<Repl> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut cs = s.chars();
    while let Some(c) = cs.next() {
        match c {
            '&' => {
                if !text.is_empty() {
                    out.push(Repl::Text(std::mem::take(&mut text)));
                }
                out.push(Repl::Whole);
            }
            '\\' => match cs.next() {
                Some('n') => text.push('\n'),
                Some('t') => text.push('\t'),
                Some(o) => text.push(o),
                None => text.push('\\'),
            },
            _ => text.push(c),
        }
    }
    if !text.is_empty() {
        out.push(Repl::Text(text));
    }
    out
}

fn substitute(line: &str, re: &Regex, repl: &[Repl], global: bool, nth: usize) -> Option<String> {
    let s: Vec<char> = line.chars().collect();
    let mut out = String::new();
    let mut pos = 0;
    let mut count = 0;
    let mut changed = false;
    let mut last_end = None;
    while pos <= s.len() {
        let Some((start, end)) = re.find_at(&s, pos) else {
            break;
        };
        // No empty match right where the previous match ended (`s/l*/X/g` on "hello" gives XhXeXoX).
        if start == end && last_end == Some(start) {
            if let Some(&c) = s.get(start) {
                out.push(c);
            }
            pos = start + 1;
            last_end = None;
            continue;
        }
        last_end = (end > start).then_some(end);
        count += 1;
        out.extend(&s[pos..start]);
        if count >= nth {
            for r in repl {
                match r {
                    Repl::Text(t) => out.push_str(t),
                    Repl::Whole => out.extend(&s[start..end]),
                }
            }
            changed = true;
        } else {
            out.extend(&s[start..end]);
        }
        // An empty match must still advance, copying one character.
        if end == start {
            if let Some(&c) = s.get(end) {
                out.push(c);
            }
            pos = end + 1;
        } else {
            pos = end;
        }
        if changed && !global {
            break;
        }
    }
    if !changed {
        return None;
    }
    if pos < s.len() {
        out.extend(&s[pos..]);
    }
    Some(out)
}

fn addr_matches(a: &Addr, line: &str, n: usize, last: bool) -> bool {
    match a {
        Addr::Line(k) => *k == n,
        Addr::Last => last,
        Addr::Re(re) => re.is_match(line),
    }
}

/// Whether command `c` applies to line `n`, updating its range state.
fn selected(c: &mut Command, line: &str, n: usize, last: bool) -> bool {
    let hit = match (&c.from, &c.to) {
        (None, _) => true,
        (Some(a), None) => addr_matches(a, line, n, last),
        (Some(a), Some(b)) => {
            if c.active {
                let end = match b {
                    Addr::Line(k) => n >= *k,
                    other => addr_matches(other, line, n, last),
                };
                if end {
                    c.active = false;
                }
                true
            } else if addr_matches(a, line, n, last) {
                // A line-number end already passed closes the range at once, like GNU sed.
                c.active = !matches!(b, Addr::Line(k) if *k <= n);
                true
            } else {
                false
            }
        }
    };
    hit != c.negate
}

/// Runs the script over `data`; returns the output and whether `q` stopped it.
fn run(cmds: &mut [Command], data: &[u8], quiet: bool) -> String {
    let text = String::from_utf8_lossy(data);
    let mut lines: Vec<&str> = text.split('\n').collect();
    let trailing_newline = text.ends_with('\n');
    if trailing_newline || text.is_empty() {
        lines.pop();
    }
    let mut out = String::new();
    let total = lines.len();
    'lines: for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        let last = n == total;
        let eol = if last && !trailing_newline { "" } else { "\n" };
        let mut ps = line.to_string();
        let mut quit = false;
        for c in cmds.iter_mut() {
            if !selected(c, &ps, n, last) {
                continue;
            }
            match &c.cmd {
                Cmd::Print => {
                    out.push_str(&ps);
                    out.push('\n');
                }
                Cmd::Delete => continue 'lines,
                Cmd::LineNo => out.push_str(&format!("{n}\n")),
                Cmd::Quit => {
                    quit = true;
                    break;
                }
                Cmd::Subst {
                    re,
                    repl,
                    global,
                    nth,
                    print,
                } => {
                    if let Some(new) = substitute(&ps, re, repl, *global, *nth) {
                        ps = new;
                        if *print {
                            out.push_str(&ps);
                            out.push('\n');
                        }
                    }
                }
            }
        }
        if !quiet {
            out.push_str(&ps);
            out.push_str(eol);
        }
        if quit {
            break;
        }
    }
    out
}

/// `sed [-n] [-i] [-E] [-e SCRIPT]... [SCRIPT] [FILE...]`
pub fn sed(sh: &mut Shell, argv: &[String], io: &Io) -> i32 {
    let (mut quiet, mut in_place, mut extended) = (false, false, false);
    let mut scripts = Vec::new();
    let mut ops = Vec::new();
    let mut i = 1;
    while i < argv.len() {
        let a = &argv[i];
        if a == "-e" || a == "--expression" {
            i += 1;
            scripts.push(argv.get(i).cloned().unwrap_or_default());
        } else if a.len() > 1 && a.starts_with('-') && a != "--" {
            for c in a[1..].chars() {
                match c {
                    'n' => quiet = true,
                    'i' => in_place = true,
                    'E' | 'r' => extended = true,
                    _ => {
                        io.eprintln(&format!("sed: invalid option -- '{c}'"));
                        return 1;
                    }
                }
            }
        } else {
            ops.push(a.clone());
        }
        i += 1;
    }
    if scripts.is_empty() {
        if ops.is_empty() {
            io.eprintln("Usage: sed [OPTION]... {script-only-if-no-other-script} [input-file]...");
            return 1;
        }
        scripts.push(ops.remove(0));
    }
    let src = scripts.join("\n");
    let mut p = ScriptParser {
        cs: src.chars().collect(),
        pos: 0,
        extended,
        _src: &src,
    };
    let mut cmds = match p.parse() {
        Ok(c) => c,
        Err(e) => {
            io.eprintln(&format!("sed: {e}"));
            return 1;
        }
    };
    if ops.is_empty() {
        if in_place {
            io.eprintln("sed: no input files");
            return 1;
        }
        ops.push("-".into());
    }
    let mut status = 0;
    if in_place {
        for f in &ops {
            match read_input(sh, f, io) {
                Ok(d) => {
                    let out = run(&mut cmds.clone(), &d, quiet);
                    if let Err(e) = std::fs::write(sh.host_path(f), out) {
                        io.eprintln(&format!("sed: couldn't edit {f}: {}", errmsg(&e)));
                        status = 4;
                    }
                }
                Err(e) => {
                    io.eprintln(&format!("sed: can't read {f}: {e}"));
                    status = 2;
                }
            }
        }
        return status;
    }
    // Without -i all inputs form one stream, so `$` and line numbers span files like GNU sed.
    let mut data = Vec::new();
    for f in &ops {
        match read_input(sh, f, io) {
            Ok(d) => {
                data.extend_from_slice(&d);
                if !d.is_empty() && !d.ends_with(b"\n") && f != ops.last().unwrap_or(f) {
                    data.push(b'\n');
                }
            }
            Err(e) => {
                io.eprintln(&format!("sed: can't read {f}: {e}"));
                status = 2;
            }
        }
    }
    io.print(&run(&mut cmds, &data, quiet));
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sed_str(script: &str, input: &str, quiet: bool) -> String {
        let mut p = ScriptParser {
            cs: script.chars().collect(),
            pos: 0,
            extended: false,
            _src: script,
        };
        let mut cmds = p.parse().unwrap();
        run(&mut cmds, input.as_bytes(), quiet)
    }

    #[test]
    fn substitutions() {
        assert_eq!(sed_str("s/o/0/", "foo\nbar\n", false), "f0o\nbar\n");
        assert_eq!(sed_str("s/o/0/g", "foo\n", false), "f00\n");
        assert_eq!(sed_str("s|/|_|g", "/a/b", false), "_a_b");
        assert_eq!(sed_str("s/[a-z]*/<&>/", "abc def\n", false), "<abc> def\n");
        assert_eq!(sed_str("s/o/0/2", "foo\n", false), "fo0\n");
        assert_eq!(sed_str("s/x*/-/g", "abc\n", false), "-a-b-c-\n");
        assert_eq!(sed_str("s/l*/X/g", "hello\n", false), "XhXeXoX\n");
    }

    #[test]
    fn addresses_and_commands() {
        let input = "1\n2\n3\n4\n";
        assert_eq!(sed_str("2d", input, false), "1\n3\n4\n");
        assert_eq!(sed_str("2,3p", input, true), "2\n3\n");
        assert_eq!(sed_str("$!d", input, false), "4\n");
        assert_eq!(sed_str("/3/q", input, false), "1\n2\n3\n");
        assert_eq!(sed_str("/2/,/3/d", input, false), "1\n4\n");
        assert_eq!(sed_str("", "a\n", true), "");
    }

    #[test]
    fn script_errors() {
        let mut p = ScriptParser {
            cs: "s/a/b".chars().collect(),
            pos: 0,
            extended: false,
            _src: "",
        };
        assert!(p.parse().is_err());
        let mut p = ScriptParser {
            cs: "k".chars().collect(),
            pos: 0,
            extended: false,
            _src: "",
        };
        assert!(p.parse().is_err());
    }
}
