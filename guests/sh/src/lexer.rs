//! Lexer: splits a command line into words, operators and redirections.
//!
//! Quoting is resolved here, but expansion is not: a word keeps a list of parts that remember whether they
//! were quoted, because quoting decides later whether `$VAR` results are field-split and `*` is globbed.

use std::fmt;

/// A syntax error; the shell reports it as `sh: syntax error: ...` and exits with status 2 like bash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError(pub String);

impl SyntaxError {
    /// Whether the input merely stopped too early (an open quote, `if` without `fi`, `$((` without `))`):
    /// what an interactive shell answers with its continuation prompt rather than an error.
    pub fn incomplete(&self) -> bool {
        [
            UNTERMINATED,
            "unexpected end of file",
            "missing `))'",
            "missing `)'",
        ]
        .contains(&self.0.as_str())
    }
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "syntax error: {}", self.0)
    }
}

/// One piece of a word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Literal text; quoted literals are exempt from globbing.
    Lit {
        /// The characters, quotes and escapes removed.
        text: String,
        /// Whether the text came from quotes or a backslash escape.
        quoted: bool,
    },
    /// A parameter: `$NAME`, `${NAME}`, `$?`, `$1`, ...
    Param {
        /// The parameter's name (`?`, `#`, `0`-`9`, `@`, `*`, `$` or a variable name).
        name: String,
        /// Inside double quotes, so never field-split.
        quoted: bool,
    },
    /// A command substitution `$(...)`, holding the inner command line unparsed.
    Subst {
        /// The source between the parentheses.
        src: String,
        /// Inside double quotes, so never field-split.
        quoted: bool,
    },
    /// An unquoted `~` at the start of a word: the home directory.
    Tilde,
    /// `${NAME:-word}` and friends: `op` is one of `:-`, `-`, `:=`, `=`, `:+`, `+`.
    ParamOp {
        /// The parameter's name.
        name: String,
        /// The operator.
        op: String,
        /// The operand, expanded only when used.
        word: Box<Word>,
        /// Inside double quotes.
        quoted: bool,
    },
    /// `${#NAME}`: the length of the value.
    Length {
        /// The parameter's name.
        name: String,
        /// Inside double quotes.
        quoted: bool,
    },
    /// `$((expr))`: arithmetic expansion, holding the expression unparsed.
    Arith {
        /// The expression between the double parentheses.
        src: String,
        /// Inside double quotes.
        quoted: bool,
    },
}

/// A shell word: the concatenation of its parts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Word {
    /// The parts in order.
    pub parts: Vec<Part>,
}

impl Word {
    /// The text of a word made only of unquoted literal text (keywords, `!`, assignment names).
    pub fn plain(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [
                Part::Lit {
                    text,
                    quoted: false,
                },
            ] => Some(text),
            _ => None,
        }
    }

    /// A word of one unquoted literal.
    pub fn literal(s: &str) -> Self {
        Word {
            parts: vec![Part::Lit {
                text: s.into(),
                quoted: false,
            }],
        }
    }

    /// A word of one unquoted literal, for building ASTs in tests.
    #[cfg(test)]
    pub fn lit(s: &str) -> Self {
        Word {
            parts: vec![Part::Lit {
                text: s.into(),
                quoted: false,
            }],
        }
    }
}

/// Control operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `&&`
    And,
    /// `||`
    Or,
    /// `;`
    Semi,
    /// `;;` (ends a `case` arm)
    DSemi,
    /// `&` (run in the background: a program is started and not waited for)
    Amp,
    /// `|`
    Pipe,
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// A newline, which separates commands like `;`.
    Newline,
}

/// Redirection operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirOp {
    /// `>`
    Out,
    /// `>>`
    Append,
    /// `<`
    In,
    /// `>&` (duplicate an output descriptor: `2>&1`)
    Dup,
    /// `&>` (stdout and stderr to a file)
    All,
    /// `&>>`
    AllAppend,
    /// `<<WORD`: the target word is the (already read) document body.
    HereDoc,
    /// `<<<word`: the word plus a newline is stdin.
    HereString,
}

/// A token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    /// A word.
    Word(Word),
    /// A control operator.
    Op(Op),
    /// A redirection operator with its explicit descriptor number (`2>`), if any.
    Redir(Option<u32>, RedirOp),
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Tok::Word(w) => return write!(f, "{}", w.plain().unwrap_or("word")),
            Tok::Op(Op::And) => "&&",
            Tok::Op(Op::Or) => "||",
            Tok::Op(Op::Semi) => ";",
            Tok::Op(Op::DSemi) => ";;",
            Tok::Op(Op::Amp) => "&",
            Tok::Op(Op::Pipe) => "|",
            Tok::Op(Op::LParen) => "(",
            Tok::Op(Op::RParen) => ")",
            Tok::Op(Op::Newline) => "newline",
            Tok::Redir(_, RedirOp::Out) => ">",
            Tok::Redir(_, RedirOp::Append) => ">>",
            Tok::Redir(_, RedirOp::In) => "<",
            Tok::Redir(_, RedirOp::Dup) => ">&",
            Tok::Redir(_, RedirOp::All) => "&>",
            Tok::Redir(_, RedirOp::AllAppend) => "&>>",
            Tok::Redir(_, RedirOp::HereDoc) => "<<",
            Tok::Redir(_, RedirOp::HereString) => "<<<",
        };
        f.write_str(s)
    }
}

const UNTERMINATED: &str = "unterminated quoted string";

/// Accumulates word parts, merging adjacent literal text of the same quotedness.
#[derive(Default)]
struct Builder {
    parts: Vec<Part>,
    cur: String,
    cur_quoted: bool,
}

impl Builder {
    fn push(&mut self, c: char, quoted: bool) {
        if !self.cur.is_empty() && self.cur_quoted != quoted {
            self.flush();
        }
        self.cur_quoted = quoted;
        self.cur.push(c);
    }

    fn flush(&mut self) {
        if !self.cur.is_empty() {
            let text = std::mem::take(&mut self.cur);
            self.parts.push(Part::Lit {
                text,
                quoted: self.cur_quoted,
            });
        }
    }

    fn part(&mut self, p: Part) {
        self.flush();
        self.parts.push(p);
    }

    fn is_empty(&self) -> bool {
        self.parts.is_empty() && self.cur.is_empty()
    }
}

fn is_meta(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '\r' | '\n' | ';' | '&' | '|' | '<' | '>' | '(' | ')'
    )
}

/// Splits `src` into tokens.
pub fn lex(src: &str) -> Result<Vec<Tok>, SyntaxError> {
    let cs: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    // Here-documents whose bodies start after the next newline: (placeholder index, delimiter, quoted, strip tabs).
    let mut pending: Vec<(usize, String, bool, bool)> = Vec::new();
    while i < cs.len() {
        let c = cs[i];
        let next = cs.get(i + 1).copied();
        match c {
            ' ' | '\t' | '\r' => i += 1,
            '\n' => {
                toks.push(Tok::Op(Op::Newline));
                i += 1;
                for (slot, delim, quoted, strip) in pending.drain(..) {
                    let body = heredoc_body(&cs, &mut i, &delim, strip);
                    toks[slot] = Tok::Word(if quoted {
                        Word {
                            parts: vec![Part::Lit {
                                text: body,
                                quoted: true,
                            }],
                        }
                    } else {
                        heredoc_word(&body)
                    });
                }
            }
            '<' if next == Some('<') && cs.get(i + 2) == Some(&'<') => {
                toks.push(Tok::Redir(Some(0), RedirOp::HereString));
                i += 3;
            }
            '<' if next == Some('<') => {
                i += 2;
                let strip = cs.get(i) == Some(&'-');
                if strip {
                    i += 1;
                }
                while matches!(cs.get(i), Some(' ' | '\t')) {
                    i += 1;
                }
                if cs.get(i).is_none_or(|&c| is_meta(c)) {
                    return Err(SyntaxError("near unexpected token `newline'".into()));
                }
                let w = word(&cs, &mut i)?;
                let quoted = w
                    .parts
                    .iter()
                    .any(|p| matches!(p, Part::Lit { quoted: true, .. }));
                let delim: String = w
                    .parts
                    .iter()
                    .map(|p| match p {
                        Part::Lit { text, .. } => text.clone(),
                        Part::Param { name, .. } => format!("${name}"),
                        Part::Subst { src, .. } => format!("$({src})"),
                        _ => String::new(),
                    })
                    .collect();
                toks.push(Tok::Redir(Some(0), RedirOp::HereDoc));
                pending.push((toks.len(), delim, quoted, strip));
                toks.push(Tok::Word(Word::default()));
            }
            '#' => {
                while i < cs.len() && cs[i] != '\n' {
                    i += 1;
                }
            }
            ';' if next == Some(';') => {
                toks.push(Tok::Op(Op::DSemi));
                i += 2;
            }
            ';' => {
                toks.push(Tok::Op(Op::Semi));
                i += 1;
            }
            '&' => match next {
                Some('&') => {
                    toks.push(Tok::Op(Op::And));
                    i += 2;
                }
                Some('>') if cs.get(i + 2) == Some(&'>') => {
                    toks.push(Tok::Redir(None, RedirOp::AllAppend));
                    i += 3;
                }
                Some('>') => {
                    toks.push(Tok::Redir(None, RedirOp::All));
                    i += 2;
                }
                _ => {
                    toks.push(Tok::Op(Op::Amp));
                    i += 1;
                }
            },
            '|' => {
                if next == Some('|') {
                    toks.push(Tok::Op(Op::Or));
                    i += 2;
                } else {
                    toks.push(Tok::Op(Op::Pipe));
                    i += 1;
                }
            }
            '(' => {
                toks.push(Tok::Op(Op::LParen));
                i += 1;
            }
            ')' => {
                toks.push(Tok::Op(Op::RParen));
                i += 1;
            }
            '<' | '>' => toks.push(redir(&cs, &mut i, None)?),
            _ => {
                // A run of digits directly followed by `<` or `>` is a descriptor number (`2>`).
                let mut j = i;
                while j < cs.len() && cs[j].is_ascii_digit() {
                    j += 1;
                }
                if j > i && j < cs.len() && (cs[j] == '<' || cs[j] == '>') {
                    let fd: String = cs[i..j].iter().collect();
                    i = j;
                    toks.push(redir(&cs, &mut i, fd.parse().ok())?);
                } else {
                    toks.push(Tok::Word(word(&cs, &mut i)?));
                }
            }
        }
    }
    Ok(toks)
}

/// Reads here-document lines after the current newline up to the delimiter line (or end of input).
fn heredoc_body(cs: &[char], i: &mut usize, delim: &str, strip: bool) -> String {
    let mut body = String::new();
    while *i < cs.len() {
        let end = (*i..cs.len()).find(|&k| cs[k] == '\n').unwrap_or(cs.len());
        let mut line: String = cs[*i..end].iter().collect();
        *i = (end + 1).min(cs.len());
        if strip {
            line = line.trim_start_matches('\t').to_string();
        }
        if line == delim {
            break;
        }
        body.push_str(&line);
        body.push('\n');
    }
    body
}

/// Parses text in which only `$` expansions are special (arithmetic expressions, here-documents).
pub fn lex_expansions(text: &str) -> Word {
    heredoc_word(text)
}

/// The parts of an unquoted here-document body: `$` expansions apply, quotes are ordinary characters.
fn heredoc_word(body: &str) -> Word {
    let cs: Vec<char> = body.chars().collect();
    let mut b = Builder::default();
    b.part(Part::Lit {
        text: String::new(),
        quoted: true,
    });
    let mut i = 0;
    while i < cs.len() {
        match cs[i] {
            '\\' if matches!(cs.get(i + 1), Some('$' | '`' | '\\')) => {
                b.push(cs[i + 1], true);
                i += 2;
            }
            '$' => {
                // A malformed expansion inside a document is kept as text rather than failing the command.
                let before = i;
                if dollar(&cs, &mut i, &mut b, true).is_err() {
                    i = before + 1;
                    b.push('$', true);
                }
            }
            c => {
                b.push(c, true);
                i += 1;
            }
        }
    }
    b.flush();
    Word { parts: b.parts }
}

fn redir(cs: &[char], i: &mut usize, fd: Option<u32>) -> Result<Tok, SyntaxError> {
    let c = cs[*i];
    let next = cs.get(*i + 1).copied();
    let (op, len) = match (c, next) {
        ('>', Some('>')) => (RedirOp::Append, 2),
        ('>', Some('&')) => (RedirOp::Dup, 2),
        ('>', Some('|')) => (RedirOp::Out, 2),
        ('>', _) => (RedirOp::Out, 1),
        ('<', Some('&')) => (RedirOp::Dup, 2),
        _ => (RedirOp::In, 1),
    };
    *i += len;
    let fd = fd.or(if c == '<' { Some(0) } else { None });
    Ok(Tok::Redir(fd, op))
}

fn word(cs: &[char], i: &mut usize) -> Result<Word, SyntaxError> {
    let mut b = Builder::default();
    while *i < cs.len() {
        let c = cs[*i];
        if is_meta(c) {
            break;
        }
        match c {
            '\\' => match cs.get(*i + 1) {
                Some('\n') => *i += 2,
                Some(&n) => {
                    b.push(n, true);
                    *i += 2;
                }
                None => {
                    b.push('\\', false);
                    *i += 1;
                }
            },
            '\'' => {
                let start = *i + 1;
                let end = (start..cs.len())
                    .find(|&k| cs[k] == '\'')
                    .ok_or_else(|| SyntaxError(UNTERMINATED.into()))?;
                // An empty `''` still makes a (possibly empty) word, hence an explicit part.
                b.part(Part::Lit {
                    text: cs[start..end].iter().collect(),
                    quoted: true,
                });
                *i = end + 1;
            }
            '"' => {
                *i += 1;
                double_quoted(cs, i, &mut b)?;
            }
            '$' => dollar(cs, i, &mut b, false)?,
            '~' if b.is_empty() && cs.get(*i + 1).is_none_or(|&n| n == '/' || is_meta(n)) => {
                b.part(Part::Tilde);
                *i += 1;
            }
            _ => {
                b.push(c, false);
                *i += 1;
            }
        }
    }
    b.flush();
    Ok(Word { parts: b.parts })
}

fn double_quoted(cs: &[char], i: &mut usize, b: &mut Builder) -> Result<(), SyntaxError> {
    b.part(Part::Lit {
        text: String::new(),
        quoted: true,
    });
    loop {
        let Some(&c) = cs.get(*i) else {
            return Err(SyntaxError(UNTERMINATED.into()));
        };
        match c {
            '"' => {
                *i += 1;
                return Ok(());
            }
            '\\' => match cs.get(*i + 1) {
                Some('\n') => *i += 2,
                Some(&n) if matches!(n, '$' | '`' | '"' | '\\') => {
                    b.push(n, true);
                    *i += 2;
                }
                _ => {
                    b.push('\\', true);
                    *i += 1;
                }
            },
            '$' => dollar(cs, i, b, true)?,
            _ => {
                b.push(c, true);
                *i += 1;
            }
        }
    }
}

fn dollar(cs: &[char], i: &mut usize, b: &mut Builder, quoted: bool) -> Result<(), SyntaxError> {
    let start = *i + 1;
    match cs.get(start) {
        Some('\'') if !quoted => {
            // ANSI-C quoting: `$'a\tb'`, escapes decoded like `echo -e`.
            let mut k = start + 1;
            let mut raw = String::new();
            loop {
                match cs.get(k) {
                    None => return Err(SyntaxError(UNTERMINATED.into())),
                    Some('\'') => break,
                    Some('\\') if k + 1 < cs.len() => {
                        if cs[k + 1] != '\'' {
                            raw.push('\\');
                        }
                        raw.push(cs[k + 1]);
                        k += 2;
                        continue;
                    }
                    Some(&c) => raw.push(c),
                }
                k += 1;
            }
            let text = crate::builtins::text::escapes(&raw).0;
            b.part(Part::Lit { text, quoted: true });
            *i = k + 1;
        }
        Some('{') => {
            let end = (start..cs.len())
                .find(|&k| cs[k] == '}')
                .ok_or_else(|| SyntaxError("missing `}'".into()))?;
            let inner: String = cs[start + 1..end].iter().collect();
            *i = end + 1;
            if let Some(name) = inner.strip_prefix('#').filter(|n| valid_param(n)) {
                b.part(Part::Length {
                    name: name.to_string(),
                    quoted,
                });
                return Ok(());
            }
            let split = inner
                .char_indices()
                .skip(1)
                .find(|&(_, c)| matches!(c, ':' | '-' | '=' | '+'))
                .map_or(inner.len(), |(k, _)| k);
            let (name, rest) = inner.split_at(split);
            if !valid_param(name) {
                return Err(SyntaxError(format!("${{{inner}}}: bad substitution")));
            }
            if rest.is_empty() {
                b.part(Part::Param {
                    name: name.to_string(),
                    quoted,
                });
                return Ok(());
            }
            let op_len = if rest.starts_with(':') { 2 } else { 1 };
            let op = rest.get(..op_len).unwrap_or(rest);
            if !matches!(op, ":-" | "-" | ":=" | "=" | ":+" | "+") {
                return Err(SyntaxError(format!("${{{inner}}}: bad substitution")));
            }
            let word = Box::new(heredoc_word(&rest[op.len()..]));
            b.part(Part::ParamOp {
                name: name.to_string(),
                op: op.to_string(),
                word,
                quoted,
            });
        }
        Some('(') if cs.get(start + 1) == Some(&'(') => {
            let mut depth = 0usize;
            let mut k = start + 2;
            loop {
                match cs.get(k) {
                    None => return Err(SyntaxError("missing `))'".into())),
                    Some('(') => depth += 1,
                    Some(')') if depth == 0 && cs.get(k + 1) == Some(&')') => break,
                    Some(')') => depth = depth.saturating_sub(1),
                    _ => {}
                }
                k += 1;
            }
            b.part(Part::Arith {
                src: cs[start + 2..k].iter().collect(),
                quoted,
            });
            *i = k + 2;
        }
        Some('(') => {
            let mut depth = 0usize;
            let mut k = start;
            let mut quote: Option<char> = None;
            loop {
                let Some(&c) = cs.get(k) else {
                    return Err(SyntaxError("missing `)'".into()));
                };
                match (quote, c) {
                    (Some('\''), '\'') | (Some('"'), '"') => quote = None,
                    (Some('"'), '\\') => k += 1,
                    (Some(_), _) => {}
                    (None, '\'' | '"') => quote = Some(c),
                    (None, '\\') => k += 1,
                    (None, '(') => depth += 1,
                    (None, ')') => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                k += 1;
            }
            b.part(Part::Subst {
                src: cs[start + 1..k].iter().collect(),
                quoted,
            });
            *i = k + 1;
        }
        Some(&c) if c.is_ascii_alphabetic() || c == '_' => {
            let mut k = start;
            while k < cs.len() && (cs[k].is_ascii_alphanumeric() || cs[k] == '_') {
                k += 1;
            }
            b.part(Part::Param {
                name: cs[start..k].iter().collect(),
                quoted,
            });
            *i = k;
        }
        Some(&c) if c.is_ascii_digit() || matches!(c, '?' | '#' | '$' | '@' | '*' | '!' | '-') => {
            b.part(Part::Param {
                name: c.to_string(),
                quoted,
            });
            *i = start + 1;
        }
        _ => {
            b.push('$', quoted);
            *i += 1;
        }
    }
    Ok(())
}

/// Whether `name` may appear inside `${...}`.
fn valid_param(name: &str) -> bool {
    let mut cs = name.chars();
    match cs.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {
            cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        Some(c) if c.is_ascii_digit() => cs.all(|c| c.is_ascii_digit()),
        Some('?' | '#' | '$' | '@' | '*' | '!' | '-') => cs.next().is_none(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str, quoted: bool) -> Part {
        Part::Lit {
            text: s.into(),
            quoted,
        }
    }

    #[test]
    fn splits_words_and_operators() {
        let t = lex("echo a&&b || c; d | e").unwrap();
        assert_eq!(t.len(), 10);
        assert_eq!(t[2], Tok::Op(Op::And));
        assert_eq!(t[4], Tok::Op(Op::Or));
        assert_eq!(t[8], Tok::Op(Op::Pipe));
    }

    #[test]
    fn quotes_mark_parts_as_quoted() {
        let t = lex(r#"a'b c'"d $X"\e"#).unwrap();
        let Tok::Word(w) = &t[0] else {
            panic!("word expected")
        };
        assert_eq!(
            w.parts,
            vec![
                lit("a", false),
                lit("b c", true),
                lit("", true),
                lit("d ", true),
                Part::Param {
                    name: "X".into(),
                    quoted: true
                },
                lit("e", true),
            ]
        );
    }

    #[test]
    fn redirections_with_descriptors() {
        let t = lex("cmd 2>&1 >>f 2>e <in &>all").unwrap();
        assert_eq!(t[1], Tok::Redir(Some(2), RedirOp::Dup));
        assert_eq!(t[3], Tok::Redir(None, RedirOp::Append));
        assert_eq!(t[5], Tok::Redir(Some(2), RedirOp::Out));
        assert_eq!(t[7], Tok::Redir(Some(0), RedirOp::In));
        assert_eq!(t[9], Tok::Redir(None, RedirOp::All));
    }

    #[test]
    fn comments_and_substitutions() {
        let t = lex("echo $(echo ')' \"(\") # rest").unwrap();
        assert_eq!(t.len(), 2);
        let Tok::Word(w) = &t[1] else {
            panic!("word expected")
        };
        assert_eq!(
            w.parts,
            vec![Part::Subst {
                src: "echo ')' \"(\"".into(),
                quoted: false
            }]
        );
    }

    #[test]
    fn unterminated_quotes_are_errors() {
        assert!(lex("echo 'abc").is_err());
        assert!(lex("echo \"abc").is_err());
        assert!(lex("echo $(abc").is_err());
        assert!(lex("echo ${abc").is_err());
        assert!(lex("echo ${a b}").is_err());
    }

    #[test]
    fn here_documents_take_the_following_lines() {
        let t = lex("cat <<EOF > f; echo after\nline $X\nEOF\necho next").unwrap();
        assert_eq!(t[1], Tok::Redir(Some(0), RedirOp::HereDoc));
        let Tok::Word(body) = &t[2] else {
            panic!("word expected")
        };
        assert!(body.parts.contains(&Part::Param {
            name: "X".into(),
            quoted: true
        }));
        assert_eq!(t.last(), Some(&Tok::Word(Word::lit("next"))));
        let t = lex("cat <<-'E'\n\t$X\n\tE\n").unwrap();
        assert_eq!(
            t[2],
            Tok::Word(Word {
                parts: vec![lit("$X\n", true)]
            })
        );
    }

    #[test]
    fn digits_inside_words_are_not_descriptors() {
        let t = lex("echo a2>f").unwrap();
        assert_eq!(t[1], Tok::Word(Word::lit("a2")));
        assert_eq!(t[2], Tok::Redir(None, RedirOp::Out));
    }
}
