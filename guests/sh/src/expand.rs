//! Word expansion: parameters, command substitution, `~`, field splitting and pathname expansion.
//!
//! Each word becomes zero or more fields. Alongside a field's text we build a glob pattern in which
//! characters that were quoted are backslash-escaped, so only unquoted wildcards are special.

use crate::exec::Shell;
use crate::glob;
use crate::io::Io;
use crate::lexer::{Part, Word};

#[derive(Default)]
struct Field {
    text: String,
    pat: String,
    wild: bool,
    started: bool,
}

impl Field {
    fn push_quoted(&mut self, s: &str) {
        self.started = true;
        self.text.push_str(s);
        for c in s.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                self.pat.push('\\');
            }
            self.pat.push(c);
        }
    }

    fn push_unquoted_lit(&mut self, s: &str) {
        self.started = true;
        self.text.push_str(s);
        self.pat.push_str(s);
        if glob::has_wildcards(s) {
            self.wild = true;
        }
    }
}

/// Expands words into the argument vector of a command.
pub fn words(sh: &mut Shell, ws: &[Word], io: &Io) -> Vec<String> {
    let mut out = Vec::new();
    for w in ws {
        for w in crate::brace::expand(w) {
            fields(sh, &w, io, &mut out);
        }
    }
    out
}

/// Expands one word without field splitting or globbing (assignment values, `case`-like uses).
pub fn single(sh: &mut Shell, w: &Word, io: &Io) -> String {
    let mut s = String::new();
    for p in &w.parts {
        match p {
            Part::Lit { text, .. } => s.push_str(text),
            Part::Tilde => s.push_str(&sh.home()),
            other => s.push_str(&value(sh, other, io).0),
        }
    }
    s
}

/// The value of an expansion part and whether it was quoted.
fn value(sh: &mut Shell, p: &Part, io: &Io) -> (String, bool) {
    match p {
        Part::Lit { text, quoted } => (text.clone(), *quoted),
        Part::Tilde => (sh.home(), true),
        Part::Param { name, quoted } => (sh.param(name), *quoted),
        Part::Subst { src, quoted } => (sh.substitute(src, io), *quoted),
        Part::Length { name, quoted } => (sh.param(name).chars().count().to_string(), *quoted),
        Part::Arith { src, quoted } => {
            // Parameters inside the expression expand first, as in `$(( $n + 1 ))`.
            let text = single(sh, &crate::lexer::lex_expansions(src), io);
            match crate::arith::eval(&text, &|name| sh.param(name)) {
                Ok(v) => (v.to_string(), *quoted),
                Err(e) => {
                    io.eprintln(&format!("sh: {}: {e}", text.trim()));
                    sh.fail_expansion();
                    (String::new(), *quoted)
                }
            }
        }
        Part::ParamOp {
            name,
            op,
            word,
            quoted,
        } => {
            let set = sh.is_set(name);
            let val = sh.param(name);
            let use_word = match op.as_str() {
                ":-" | ":=" => val.is_empty(),
                "-" | "=" => !set,
                ":+" => !val.is_empty(),
                _ => set,
            };
            let out = if op.ends_with('+') {
                if use_word {
                    single(sh, word, io)
                } else {
                    String::new()
                }
            } else if use_word {
                let w = single(sh, word, io);
                if op.ends_with('=') {
                    sh.set_var(name, &w);
                }
                w
            } else {
                val
            };
            (out, *quoted)
        }
    }
}

/// Expands a word into a wildcard pattern (for `case`): quoted characters are escaped.
pub fn pattern(sh: &mut Shell, w: &Word, io: &Io) -> String {
    let mut f = Field::default();
    for p in &w.parts {
        match p {
            Part::Lit {
                text,
                quoted: false,
            } => f.push_unquoted_lit(text),
            other => {
                let (v, quoted) = value(sh, other, io);
                if quoted {
                    f.push_quoted(&v)
                } else {
                    f.push_unquoted_lit(&v)
                }
            }
        }
    }
    f.pat
}

fn fields(sh: &mut Shell, w: &Word, io: &Io, out: &mut Vec<String>) {
    let mut done: Vec<Field> = Vec::new();
    let mut cur = Field::default();
    for p in &w.parts {
        let (value, quoted) = match p {
            Part::Lit { text, quoted: true } => {
                cur.push_quoted(text);
                continue;
            }
            Part::Lit {
                text,
                quoted: false,
            } => {
                cur.push_unquoted_lit(text);
                continue;
            }
            Part::Tilde => {
                cur.push_quoted(&sh.home());
                continue;
            }
            Part::Param { name, quoted: true } if name == "@" => {
                // "$@" keeps every positional parameter a separate field.
                let args = sh.args.get(1..).unwrap_or_default().to_vec();
                for (k, a) in args.iter().enumerate() {
                    if k > 0 {
                        done.push(std::mem::take(&mut cur));
                    }
                    cur.push_quoted(a);
                }
                continue;
            }
            other => value(sh, other, io),
        };
        if quoted {
            cur.push_quoted(&value);
            continue;
        }
        // Unquoted expansion results are split on whitespace (the default IFS).
        let mut pieces = value.split([' ', '\t', '\n']).peekable();
        let mut first = true;
        while let Some(piece) = pieces.next() {
            if !first && cur.started {
                done.push(std::mem::take(&mut cur));
            }
            first = false;
            if !piece.is_empty() {
                cur.push_quoted(piece);
            }
            if pieces.peek().is_none() {
                break;
            }
        }
    }
    if cur.started {
        done.push(cur);
    }
    for f in done {
        if f.wild {
            let matches = glob::glob(sh, &f.pat);
            if !matches.is_empty() {
                out.extend(matches);
                continue;
            }
        }
        out.push(f.text);
    }
}

#[cfg(test)]
mod tests {
    use crate::exec::Shell;
    use crate::parser::{Command, parse};

    fn expand(sh: &mut Shell, src: &str) -> Vec<String> {
        let list = parse(src).unwrap();
        let Command::Simple(s) = &list[0].first.cmds[0] else {
            panic!("simple expected")
        };
        let io = sh.io();
        super::words(sh, &s.words, &io)
    }

    #[test]
    fn splitting_and_quoting() {
        let (mut sh, _, _) = Shell::for_test(std::path::Path::new("/nonexistent-root"));
        sh.set_var("A", "x  y");
        sh.set_var("E", "");
        assert_eq!(expand(&mut sh, "echo $A"), ["echo", "x", "y"]);
        assert_eq!(expand(&mut sh, "echo \"$A\""), ["echo", "x  y"]);
        assert_eq!(expand(&mut sh, "echo $E"), ["echo"]);
        assert_eq!(expand(&mut sh, "echo \"$E\" ''"), ["echo", "", ""]);
        assert_eq!(expand(&mut sh, "echo a$A"), ["echo", "ax", "y"]);
        assert_eq!(expand(&mut sh, "echo ${A}b"), ["echo", "x", "yb"]);
        assert_eq!(expand(&mut sh, "echo '*' \\*"), ["echo", "*", "*"]);
        assert_eq!(expand(&mut sh, "echo nomatch*"), ["echo", "nomatch*"]);
    }

    #[test]
    fn special_parameters() {
        let (mut sh, _, _) = Shell::for_test(std::path::Path::new("/nonexistent-root"));
        sh.status = 7;
        assert_eq!(expand(&mut sh, "echo $? ~"), ["echo", "7", "/root"]);
        assert_eq!(expand(&mut sh, "echo $(echo a b)"), ["echo", "a", "b"]);
        assert_eq!(
            expand(
                &mut sh,
                "echo ${U:-d e} \"${U:-d e}\" ${HOME:+set} ${#HOME}"
            ),
            ["echo", "d", "e", "d e", "set", "5"]
        );
        assert_eq!(
            expand(&mut sh, "echo $((1 + 2 * 3)) $(( (1+2) * 3 ))"),
            ["echo", "7", "9"]
        );
        assert_eq!(expand(&mut sh, "echo ${N:=4} $N"), ["echo", "4", "4"]);
    }
}
