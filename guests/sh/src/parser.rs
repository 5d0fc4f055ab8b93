//! Parser: builds the AST (list → and-or → pipeline → command) from tokens by recursive descent.
//!
//! Nesting (subshells, `if`, loops, groups) is bounded by [`MAX_DEPTH`] so hostile input cannot overflow the
//! guest's small stack.

use crate::lexer::{Op, RedirOp, SyntaxError, Tok, Word, lex};

/// Deepest nesting of compound commands accepted; deeper input is a syntax error rather than a crash.
pub const MAX_DEPTH: usize = 64;

/// A sequence of and-or lists separated by `;`, `&` or newlines.
pub type List = Vec<AndOr>;

/// How an and-or list continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connector {
    /// `&&`: run the next pipeline if the previous one succeeded.
    And,
    /// `||`: run the next pipeline if the previous one failed.
    Or,
}

/// Pipelines joined by `&&` and `||`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AndOr {
    /// The first pipeline.
    pub first: Pipeline,
    /// The following pipelines with the operator before each.
    pub rest: Vec<(Connector, Pipeline)>,
    /// Ended by `&`: run in the background.
    pub background: bool,
}

/// Commands joined by `|`, optionally negated with `!`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipeline {
    /// Whether the status is inverted (`! cmd`).
    pub negate: bool,
    /// The stages, at least one.
    pub cmds: Vec<Command>,
}

/// A redirection such as `2>>log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redir {
    /// The descriptor redirected (1 when not written).
    pub fd: u32,
    /// The operator.
    pub op: RedirOp,
    /// The file name, or the descriptor number for `>&`.
    pub target: Word,
}

/// A simple command: assignments, words and redirections in any order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Simple {
    /// `NAME=value` prefixes.
    pub assigns: Vec<(String, Word)>,
    /// The command name and its arguments.
    pub words: Vec<Word>,
    /// Redirections.
    pub redirs: Vec<Redir>,
}

/// A command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A simple command.
    Simple(Simple),
    /// `( list )`: runs with a copy of the shell state.
    Subshell(List, Vec<Redir>),
    /// `{ list; }`
    Group(List, Vec<Redir>),
    /// `if c; then b; [elif c; then b;]... [else b;] fi`
    If {
        /// (condition, body) for `if` and every `elif`.
        arms: Vec<(List, List)>,
        /// The `else` body.
        otherwise: Option<List>,
        /// Redirections after `fi`.
        redirs: Vec<Redir>,
    },
    /// `while c; do b; done` or `until c; do b; done`.
    While {
        /// True for `until`.
        until: bool,
        /// The condition.
        cond: List,
        /// The body.
        body: List,
        /// Redirections after `done`.
        redirs: Vec<Redir>,
    },
    /// `case WORD in PATTERN|PATTERN) list ;; ... esac`
    Case {
        /// The word matched.
        word: Word,
        /// (patterns, body) per arm.
        arms: Vec<(Vec<Word>, List)>,
        /// Redirections after `esac`.
        redirs: Vec<Redir>,
    },
    /// `name() compound-command`: defines a function.
    Func {
        /// The function's name.
        name: String,
        /// Its body.
        body: std::rc::Rc<Command>,
    },
    /// `for NAME [in words]; do b; done`
    For {
        /// The loop variable.
        var: String,
        /// The words iterated over (`None`: the positional parameters).
        items: Option<Vec<Word>>,
        /// The body.
        body: List,
        /// Redirections after `done`.
        redirs: Vec<Redir>,
    },
}

/// Parses a whole command line.
pub fn parse(src: &str) -> Result<List, SyntaxError> {
    let mut p = Parser {
        toks: lex(src)?,
        pos: 0,
        depth: 0,
    };
    let list = p.list(&[])?;
    match p.peek() {
        None => Ok(list),
        Some(t) => Err(unexpected(t)),
    }
}

fn unexpected(t: &Tok) -> SyntaxError {
    SyntaxError(format!("near unexpected token `{t}'"))
}

fn eof() -> SyntaxError {
    SyntaxError("unexpected end of file".into())
}

/// Whether `name` is a valid variable name.
pub fn is_name(name: &str) -> bool {
    let mut cs = name.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

const RESERVED: &[&str] = &[
    "then", "elif", "else", "fi", "do", "done", "}", "in", "esac",
];

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn peek_keyword(&self) -> Option<&str> {
        match self.peek() {
            Some(Tok::Word(w)) => w.plain(),
            _ => None,
        }
    }

    fn skip_newlines(&mut self) {
        while self.peek() == Some(&Tok::Op(Op::Newline)) {
            self.pos += 1;
        }
    }

    fn expect_keyword(&mut self, kw: &str) -> Result<(), SyntaxError> {
        self.skip_newlines();
        match self.peek() {
            Some(Tok::Word(w)) if w.plain() == Some(kw) => {
                self.pos += 1;
                Ok(())
            }
            Some(t) => Err(unexpected(t)),
            None => Err(eof()),
        }
    }

    /// Parses and-or lists until end of input, `)` or one of the `stops` keywords in command position.
    fn list(&mut self, stops: &[&str]) -> Result<List, SyntaxError> {
        let mut items = Vec::new();
        loop {
            self.skip_newlines();
            match self.peek() {
                None | Some(Tok::Op(Op::RParen | Op::DSemi)) => break,
                Some(Tok::Word(w)) if w.plain().is_some_and(|k| stops.contains(&k)) => break,
                _ => {}
            }
            items.push(self.and_or()?);
            match self.peek() {
                Some(Tok::Op(Op::Amp)) => {
                    if let Some(last) = items.last_mut() {
                        last.background = true;
                    }
                    self.pos += 1;
                }
                Some(Tok::Op(Op::Semi | Op::Newline)) => self.pos += 1,
                _ => break,
            }
        }
        Ok(items)
    }

    /// A list that must contain at least one command (bodies of compound commands).
    fn body(&mut self, stops: &[&str]) -> Result<List, SyntaxError> {
        let list = self.list(stops)?;
        if list.is_empty() {
            return Err(self.peek().map(unexpected).unwrap_or_else(eof));
        }
        Ok(list)
    }

    fn and_or(&mut self) -> Result<AndOr, SyntaxError> {
        let first = self.pipeline()?;
        let mut rest = Vec::new();
        loop {
            let conn = match self.peek() {
                Some(Tok::Op(Op::And)) => Connector::And,
                Some(Tok::Op(Op::Or)) => Connector::Or,
                _ => break,
            };
            self.pos += 1;
            self.skip_newlines();
            rest.push((conn, self.pipeline()?));
        }
        Ok(AndOr {
            first,
            rest,
            background: false,
        })
    }

    fn pipeline(&mut self) -> Result<Pipeline, SyntaxError> {
        let mut negate = false;
        while self.peek_keyword() == Some("!") {
            negate = !negate;
            self.pos += 1;
        }
        let mut cmds = vec![self.command()?];
        while self.peek() == Some(&Tok::Op(Op::Pipe)) {
            self.pos += 1;
            self.skip_newlines();
            cmds.push(self.command()?);
        }
        Ok(Pipeline { negate, cmds })
    }

    fn command(&mut self) -> Result<Command, SyntaxError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(SyntaxError("commands nested too deeply".into()));
        }
        let cmd = self.command_inner();
        self.depth -= 1;
        cmd
    }

    fn command_inner(&mut self) -> Result<Command, SyntaxError> {
        if self.peek() == Some(&Tok::Op(Op::LParen)) {
            self.pos += 1;
            let list = self.body(&[])?;
            match self.peek() {
                Some(Tok::Op(Op::RParen)) => self.pos += 1,
                Some(t) => return Err(unexpected(t)),
                None => return Err(eof()),
            }
            return Ok(Command::Subshell(list, self.redirs()?));
        }
        match self.peek_keyword() {
            Some("{") => {
                self.pos += 1;
                let list = self.body(&["}"])?;
                self.expect_keyword("}")?;
                Ok(Command::Group(list, self.redirs()?))
            }
            Some("if") => {
                self.pos += 1;
                let mut arms = Vec::new();
                let mut otherwise = None;
                loop {
                    let cond = self.body(&["then"])?;
                    self.expect_keyword("then")?;
                    let body = self.body(&["elif", "else", "fi"])?;
                    arms.push((cond, body));
                    match self.peek_keyword() {
                        Some("elif") => self.pos += 1,
                        Some("else") => {
                            self.pos += 1;
                            otherwise = Some(self.body(&["fi"])?);
                            self.expect_keyword("fi")?;
                            break;
                        }
                        _ => {
                            self.expect_keyword("fi")?;
                            break;
                        }
                    }
                }
                Ok(Command::If {
                    arms,
                    otherwise,
                    redirs: self.redirs()?,
                })
            }
            Some(kw @ ("while" | "until")) => {
                let until = kw == "until";
                self.pos += 1;
                let cond = self.body(&["do"])?;
                self.expect_keyword("do")?;
                let body = self.body(&["done"])?;
                self.expect_keyword("done")?;
                Ok(Command::While {
                    until,
                    cond,
                    body,
                    redirs: self.redirs()?,
                })
            }
            Some("for") => {
                self.pos += 1;
                let var = match self.peek() {
                    Some(Tok::Word(w)) if w.plain().is_some_and(is_name) => {
                        w.plain().unwrap_or_default().to_string()
                    }
                    Some(t) => return Err(unexpected(t)),
                    None => return Err(eof()),
                };
                self.pos += 1;
                self.skip_newlines();
                let mut items = None;
                if self.peek_keyword() == Some("in") {
                    self.pos += 1;
                    let mut words = Vec::new();
                    while let Some(Tok::Word(w)) = self.peek() {
                        words.push(w.clone());
                        self.pos += 1;
                    }
                    items = Some(words);
                }
                if let Some(Tok::Op(Op::Semi | Op::Newline)) = self.peek() {
                    self.pos += 1;
                }
                self.expect_keyword("do")?;
                let body = self.body(&["done"])?;
                self.expect_keyword("done")?;
                Ok(Command::For {
                    var,
                    items,
                    body,
                    redirs: self.redirs()?,
                })
            }
            Some("case") => {
                self.pos += 1;
                let word = match self.peek() {
                    Some(Tok::Word(w)) => w.clone(),
                    Some(t) => return Err(unexpected(t)),
                    None => return Err(eof()),
                };
                self.pos += 1;
                self.expect_keyword("in")?;
                let mut arms = Vec::new();
                loop {
                    self.skip_newlines();
                    if self.peek_keyword() == Some("esac") {
                        self.pos += 1;
                        break;
                    }
                    if self.peek() == Some(&Tok::Op(Op::LParen)) {
                        self.pos += 1;
                    }
                    let mut pats = Vec::new();
                    loop {
                        match self.peek() {
                            Some(Tok::Word(w)) => pats.push(w.clone()),
                            Some(t) => return Err(unexpected(t)),
                            None => return Err(eof()),
                        }
                        self.pos += 1;
                        match self.peek() {
                            Some(Tok::Op(Op::Pipe)) => self.pos += 1,
                            Some(Tok::Op(Op::RParen)) => {
                                self.pos += 1;
                                break;
                            }
                            Some(t) => return Err(unexpected(t)),
                            None => return Err(eof()),
                        }
                    }
                    let body = self.list(&["esac"])?;
                    arms.push((pats, body));
                    self.skip_newlines();
                    match self.peek() {
                        Some(Tok::Op(Op::DSemi)) => self.pos += 1,
                        Some(Tok::Word(w)) if w.plain() == Some("esac") => {}
                        Some(t) => return Err(unexpected(t)),
                        None => return Err(eof()),
                    }
                }
                Ok(Command::Case {
                    word,
                    arms,
                    redirs: self.redirs()?,
                })
            }
            Some("function") => {
                self.pos += 1;
                let name = match self.peek() {
                    Some(Tok::Word(w)) if w.plain().is_some() => {
                        w.plain().unwrap_or_default().to_string()
                    }
                    Some(t) => return Err(unexpected(t)),
                    None => return Err(eof()),
                };
                self.pos += 1;
                if self.peek() == Some(&Tok::Op(Op::LParen))
                    && self.toks.get(self.pos + 1) == Some(&Tok::Op(Op::RParen))
                {
                    self.pos += 2;
                }
                self.func_body(name)
            }
            Some(kw) if RESERVED.contains(&kw) => {
                Err(SyntaxError(format!("near unexpected token `{kw}'")))
            }
            _ => self.simple(),
        }
    }

    fn func_body(&mut self, name: String) -> Result<Command, SyntaxError> {
        self.skip_newlines();
        let body = self.command()?;
        if matches!(body, Command::Simple(_) | Command::Func { .. }) {
            return Err(SyntaxError(format!("near unexpected token `{name}'")));
        }
        Ok(Command::Func {
            name,
            body: std::rc::Rc::new(body),
        })
    }

    fn redir(&mut self, fd: Option<u32>, op: RedirOp) -> Result<Redir, SyntaxError> {
        self.pos += 1;
        let target = match self.peek() {
            Some(Tok::Word(w)) => w.clone(),
            Some(t) => return Err(unexpected(t)),
            None => return Err(SyntaxError("near unexpected token `newline'".into())),
        };
        self.pos += 1;
        let fd = fd.unwrap_or(
            if matches!(op, RedirOp::In | RedirOp::HereDoc | RedirOp::HereString) {
                0
            } else {
                1
            },
        );
        Ok(Redir { fd, op, target })
    }

    fn redirs(&mut self) -> Result<Vec<Redir>, SyntaxError> {
        let mut out = Vec::new();
        while let Some(&Tok::Redir(fd, op)) = self.peek() {
            out.push(self.redir(fd, op)?);
        }
        Ok(out)
    }

    /// `[[ ... ]]`: operators inside are words for the `[[` builtin, not shell syntax.
    fn double_bracket(&mut self) -> Result<Command, SyntaxError> {
        let mut s = Simple::default();
        loop {
            let word = match self.peek() {
                Some(Tok::Word(w)) => w.clone(),
                Some(Tok::Op(Op::And)) => Word::literal("&&"),
                Some(Tok::Op(Op::Or)) => Word::literal("||"),
                Some(Tok::Op(Op::LParen)) => Word::literal("("),
                Some(Tok::Op(Op::RParen)) => Word::literal(")"),
                Some(Tok::Redir(None, RedirOp::Out)) => Word::literal(">"),
                Some(Tok::Redir(Some(0), RedirOp::In)) => Word::literal("<"),
                Some(t) => return Err(unexpected(t)),
                None => return Err(eof()),
            };
            self.pos += 1;
            let end = !s.words.is_empty() && word.plain() == Some("]]");
            s.words.push(word);
            if end {
                break;
            }
        }
        s.redirs = self.redirs()?;
        Ok(Command::Simple(s))
    }

    fn simple(&mut self) -> Result<Command, SyntaxError> {
        if self.peek_keyword() == Some("[[") {
            return self.double_bracket();
        }
        let mut s = Simple::default();
        loop {
            match self.peek() {
                Some(Tok::Word(w)) => {
                    let w = w.clone();
                    self.pos += 1;
                    // `name() { ...; }` defines a function.
                    if s.words.is_empty()
                        && s.assigns.is_empty()
                        && s.redirs.is_empty()
                        && self.peek() == Some(&Tok::Op(Op::LParen))
                        && self.toks.get(self.pos + 1) == Some(&Tok::Op(Op::RParen))
                        && let Some(name) = w.plain()
                    {
                        self.pos += 2;
                        return self.func_body(name.to_string());
                    }
                    if s.words.is_empty()
                        && let Some(assign) = split_assignment(&w)
                    {
                        s.assigns.push(assign);
                    } else {
                        s.words.push(w);
                    }
                }
                Some(&Tok::Redir(fd, op)) => {
                    let r = self.redir(fd, op)?;
                    s.redirs.push(r);
                }
                _ => break,
            }
        }
        if s.words.is_empty() && s.assigns.is_empty() && s.redirs.is_empty() {
            return Err(self.peek().map(unexpected).unwrap_or_else(eof));
        }
        Ok(Command::Simple(s))
    }
}

/// Splits `NAME=value` into the name and the value word, when the name part is unquoted and valid.
fn split_assignment(w: &Word) -> Option<(String, Word)> {
    use crate::lexer::Part;
    let Some(Part::Lit {
        text,
        quoted: false,
    }) = w.parts.first()
    else {
        return None;
    };
    let eq = text.find('=')?;
    let name = &text[..eq];
    if !is_name(name) {
        return None;
    }
    let mut value = Word {
        parts: Vec::with_capacity(w.parts.len()),
    };
    let rest = &text[eq + 1..];
    if !rest.is_empty() {
        value.parts.push(Part::Lit {
            text: rest.to_string(),
            quoted: false,
        });
    }
    value.parts.extend(w.parts[1..].iter().cloned());
    Some((name.to_string(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn simple(words: &[&str]) -> Command {
        Command::Simple(Simple {
            words: words.iter().map(|w| Word::lit(w)).collect(),
            ..Simple::default()
        })
    }

    #[test]
    fn and_or_and_pipelines() {
        let l = parse("a | b && ! c || d; e").unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].first.cmds, vec![simple(&["a"]), simple(&["b"])]);
        assert_eq!(l[0].rest.len(), 2);
        assert!(l[0].rest[0].1.negate);
        assert_eq!(l[0].rest[1].0, Connector::Or);
    }

    #[test]
    fn assignments_only_before_the_command_name() {
        let l = parse("A=1 B=x echo C=2").unwrap();
        let Command::Simple(s) = &l[0].first.cmds[0] else {
            panic!("simple expected")
        };
        assert_eq!(s.assigns.len(), 2);
        assert_eq!(s.words.len(), 2);
    }

    #[test]
    fn redirections_anywhere() {
        let l = parse(">out echo hi 2>&1").unwrap();
        let Command::Simple(s) = &l[0].first.cmds[0] else {
            panic!("simple expected")
        };
        assert_eq!(s.redirs.len(), 2);
        assert_eq!(s.redirs[1].fd, 2);
        assert_eq!(s.redirs[1].op, RedirOp::Dup);
    }

    #[test]
    fn compound_commands() {
        assert!(matches!(
            parse("if true; then echo y; else echo n; fi").unwrap()[0]
                .first
                .cmds[0],
            Command::If { .. }
        ));
        assert!(matches!(
            parse("for i in 1 2\ndo echo $i\ndone").unwrap()[0]
                .first
                .cmds[0],
            Command::For { .. }
        ));
        assert!(matches!(
            parse("while false; do :; done").unwrap()[0].first.cmds[0],
            Command::While { .. }
        ));
        assert!(matches!(
            parse("(cd /; pwd) > f").unwrap()[0].first.cmds[0],
            Command::Subshell(..)
        ));
        assert!(matches!(
            parse("{ echo a; echo b; }").unwrap()[0].first.cmds[0],
            Command::Group(..)
        ));
        assert!(matches!(
            parse("case $x in a|b) echo ab;; *) echo other;; esac").unwrap()[0]
                .first
                .cmds[0],
            Command::Case { .. }
        ));
        assert!(matches!(
            parse("f() { echo hi; }").unwrap()[0].first.cmds[0],
            Command::Func { .. }
        ));
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "| a",
            "a |",
            "a && ",
            "; a",
            "a >",
            "if true; then fi",
            "(a",
            "a )",
            "done",
            "for 1 in a; do b; done",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn deep_nesting_is_rejected_not_a_crash() {
        let src = "(".repeat(10_000) + "a" + &")".repeat(10_000);
        assert!(parse(&src).is_err());
    }

    #[test]
    fn empty_input_is_an_empty_list() {
        assert_eq!(parse("  # only a comment\n").unwrap(), Vec::new());
    }
}
