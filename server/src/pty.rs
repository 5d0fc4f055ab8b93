//! The pseudo-terminal of a process started with a `pty` (envd's `Start` with `pty.size`, what the SDKs'
//! `sandbox.pty.create` sends): a Linux-like line discipline in canonical mode, kept on the host because a
//! wasm guest has no terminal.
//!
//! What the client types (`SendInput` with `input.pty`) goes through [`LineDiscipline::feed`]: characters
//! are echoed and gathered into a line, which the guest reads from its stdin only once it is finished by
//! Enter (`\r`, turned into `\n` as `ICRNL` does). Backspace/DEL erase a character, Ctrl-U the line, Ctrl-W
//! a word; Ctrl-C echoes `^C`, drops the line and interrupts the guest ([`Action::Interrupt`]); Ctrl-D on
//! an empty line is one end of file, after text it hands that text over without a newline. A line is at
//! most [`MAX_LINE`] bytes: past it the terminal beeps and drops what is typed. What the guest writes (its
//! stdout and stderr, both the terminal) becomes `\r\n`-terminated ([`onlcr`]).
//!
//! The size ([`PtySize`]) is what the client gave at the start or last `Update`; the guest sees the
//! starting one as `COLUMNS` and `LINES` (it has no way to be told of a change while it runs).

use std::sync::{Mutex, MutexGuard};

/// Longest line being typed: the bound on what one process's terminal buffers for it.
pub const MAX_LINE: usize = 64 << 10;
/// Largest number of columns or rows a size may have.
pub const MAX_DIMENSION: u32 = 10_000;

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PtySize {
    /// Columns.
    pub cols: u32,
    /// Rows.
    pub rows: u32,
}

/// Why a `pty` of a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// `pty.size` (or one of its fields) is missing or not a number.
    #[error("pty.size must give cols and rows as numbers")]
    Missing,
    /// A dimension is 0 or larger than [`MAX_DIMENSION`].
    #[error("pty.size {cols}x{rows} is out of range: cols and rows must be 1 to {MAX_DIMENSION}")]
    OutOfRange {
        /// The columns asked for.
        cols: u64,
        /// The rows asked for.
        rows: u64,
    },
}

impl PtySize {
    /// The size a request's `PTY` message gives (`{"size": {"cols": C, "rows": R}}`; proto3 JSON leaves
    /// out zero fields, so a missing one is 0, and numbers may come as strings).
    pub fn from_pty_json(pty: &serde_json::Value) -> Result<Self, SizeError> {
        let size = pty.get("size").ok_or(SizeError::Missing)?;
        let field = |name: &str| match size.get(name) {
            None => Ok(0),
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or(SizeError::Missing),
        };
        let (cols, rows) = (field("cols")?, field("rows")?);
        let ok = |n: u64| (1..=u64::from(MAX_DIMENSION)).contains(&n);
        if !ok(cols) || !ok(rows) {
            return Err(SizeError::OutOfRange { cols, rows });
        }
        // Both are at most MAX_DIMENSION, so they fit.
        Ok(Self {
            cols: cols as u32,
            rows: rows as u32,
        })
    }
}

/// What the terminal does with a piece of typed input, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Show these bytes to the client (echo, erasing, `^C`, a beep).
    Echo(Vec<u8>),
    /// Hand these bytes to the guest's stdin (a finished line, with its `\n`).
    Input(Vec<u8>),
    /// One end of file for the guest's stdin (Ctrl-D on an empty line).
    Eof,
    /// Interrupt the guest (Ctrl-C) and drop whatever it has not read yet.
    Interrupt,
}

/// Canonical-mode input processing: the line being typed and what each byte does to it.
#[derive(Debug, Default)]
pub struct LineDiscipline {
    line: Vec<u8>,
}

/// Control characters the discipline acts on (the defaults of `stty`).
const INTR: u8 = 0x03;
const EOF: u8 = 0x04;
const BELL: u8 = 0x07;
const BACKSPACE: u8 = 0x08;
const KILL: u8 = 0x15;
const WERASE: u8 = 0x17;
const DEL: u8 = 0x7f;

impl LineDiscipline {
    /// A terminal with nothing typed.
    pub fn new() -> Self {
        Self::default()
    }

    /// The line typed so far, not yet handed to the guest.
    pub fn pending(&self) -> &[u8] {
        &self.line
    }

    /// Processes typed bytes: what to show and what to hand over, in order (adjacent echoes merged).
    pub fn feed(&mut self, input: &[u8]) -> Vec<Action> {
        let mut out = Actions::default();
        for &b in input {
            match b {
                b'\r' | b'\n' => {
                    out.echo(b"\r\n");
                    let mut line = std::mem::take(&mut self.line);
                    line.push(b'\n');
                    out.push(Action::Input(line));
                }
                INTR => {
                    out.echo(b"^C\r\n");
                    self.line.clear();
                    out.push(Action::Interrupt);
                }
                EOF if self.line.is_empty() => out.push(Action::Eof),
                EOF => out.push(Action::Input(std::mem::take(&mut self.line))),
                BACKSPACE | DEL => {
                    if let Some(width) = self.erase_char() {
                        out.erase(width);
                    }
                }
                KILL => {
                    while let Some(width) = self.erase_char() {
                        out.erase(width);
                    }
                }
                WERASE => {
                    while self.line.last().is_some_and(u8::is_ascii_whitespace) {
                        out.erase(self.erase_char().unwrap_or(0));
                    }
                    while self.line.last().is_some_and(|c| !c.is_ascii_whitespace()) {
                        out.erase(self.erase_char().unwrap_or(0));
                    }
                }
                _ if self.line.len() >= MAX_LINE => out.echo(&[BELL]),
                _ => {
                    self.line.push(b);
                    if is_shown_as_caret(b) {
                        // `ECHOCTL`: other control characters (an arrow key's ESC) are shown as `^X`.
                        out.echo(&[b'^', b ^ 0x40]);
                    } else {
                        out.echo(&[b]);
                    }
                }
            }
        }
        out.0
    }

    /// Removes the last character of the line (all the bytes of a UTF-8 one): the columns it took on the
    /// screen, or `None` when the line is empty.
    fn erase_char(&mut self) -> Option<usize> {
        let last = self.line.pop()?;
        if last >= 0x80 {
            // Continuation bytes (10xxxxxx) go with the character's first byte.
            let mut first = last;
            while first & 0xc0 == 0x80 {
                match self.line.pop() {
                    Some(b) => first = b,
                    None => break,
                }
            }
        }
        Some(if is_shown_as_caret(last) { 2 } else { 1 })
    }
}

/// Whether a typed byte is echoed as `^X` (control characters other than tab).
fn is_shown_as_caret(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == DEL
}

/// Actions being gathered, echoes merged.
#[derive(Default)]
struct Actions(Vec<Action>);

impl Actions {
    fn push(&mut self, action: Action) {
        self.0.push(action);
    }

    fn echo(&mut self, bytes: &[u8]) {
        match self.0.last_mut() {
            Some(Action::Echo(echo)) => echo.extend_from_slice(bytes),
            _ => self.0.push(Action::Echo(bytes.to_vec())),
        }
    }

    /// Erases `width` columns left of the cursor.
    fn erase(&mut self, width: usize) {
        for _ in 0..width {
            self.echo(b"\x08 \x08");
        }
    }
}

/// Output post-processing (`OPOST` with `ONLCR`): every `\n` the guest writes reaches the terminal as
/// `\r\n`.
pub fn onlcr(output: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(output.len() + output.len() / 16);
    for &b in output {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// The terminal of one process: its line discipline and size, shared by the requests that type into it
/// and resize it.
#[derive(Debug)]
pub struct Pty {
    state: Mutex<PtyState>,
}

#[derive(Debug)]
struct PtyState {
    discipline: LineDiscipline,
    size: PtySize,
}

impl Pty {
    /// A terminal of `size` with nothing typed.
    pub fn new(size: PtySize) -> Self {
        Self {
            state: Mutex::new(PtyState {
                discipline: LineDiscipline::new(),
                size,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PtyState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Its current size.
    pub fn size(&self) -> PtySize {
        self.lock().size
    }

    /// Changes its size.
    pub fn resize(&self, size: PtySize) {
        self.lock().size = size;
    }

    /// Runs typed input through the line discipline; `apply` carries out each action while the terminal
    /// is held, so input sent by two requests at once is not interleaved within a line.
    pub fn feed<E>(
        &self,
        input: &[u8],
        mut apply: impl FnMut(Action) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut state = self.lock();
        for action in state.discipline.feed(input) {
            apply(action)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn echo(s: &str) -> Action {
        Action::Echo(s.as_bytes().to_vec())
    }

    fn input(s: &str) -> Action {
        Action::Input(s.as_bytes().to_vec())
    }

    #[test]
    fn enter_echoes_and_hands_over_the_line() {
        let mut ld = LineDiscipline::new();
        assert_eq!(ld.feed(b"echo hi"), vec![echo("echo hi")]);
        assert_eq!(ld.pending(), b"echo hi");
        assert_eq!(
            ld.feed(b"\rls\n"),
            vec![
                echo("\r\n"),
                input("echo hi\n"),
                echo("ls\r\n"),
                input("ls\n")
            ]
        );
        assert!(ld.pending().is_empty());
    }

    #[test]
    fn backspace_del_kill_and_word_erase_edit_the_line() {
        let mut ld = LineDiscipline::new();
        let erase = "\x08 \x08";
        assert_eq!(
            ld.feed(b"ecx\x7fho\x08o"),
            vec![echo(&format!("ecx{erase}ho{erase}o"))]
        );
        assert_eq!(ld.pending(), b"echo");
        // Backspace on an empty line does nothing.
        let mut empty = LineDiscipline::new();
        assert!(empty.feed(b"\x7f").is_empty());
        assert_eq!(
            ld.feed(b" a b \x17"),
            vec![echo(&format!(" a b {erase}{erase}"))]
        );
        assert_eq!(ld.pending(), b"echo a ");
        assert_eq!(ld.feed(b"\x15"), vec![echo(&erase.repeat(7))]);
        assert!(ld.pending().is_empty());
    }

    #[test]
    fn a_multibyte_character_is_erased_whole() {
        let mut ld = LineDiscipline::new();
        ld.feed("aé€".as_bytes());
        ld.feed(b"\x7f\x7f");
        assert_eq!(ld.pending(), b"a");
    }

    #[test]
    fn control_characters_show_as_carets_and_erase_two_columns() {
        let mut ld = LineDiscipline::new();
        assert_eq!(ld.feed(b"\x1b[A"), vec![echo("^[[A")]);
        assert_eq!(ld.feed(b"\x7f\x7f\x7f"), vec![echo(&"\x08 \x08".repeat(4))]);
        assert!(ld.pending().is_empty());
        assert_eq!(ld.feed(b"\t"), vec![echo("\t")]);
    }

    #[test]
    fn ctrl_c_drops_the_line_and_interrupts() {
        let mut ld = LineDiscipline::new();
        assert_eq!(
            ld.feed(b"sleep\x03x\r"),
            vec![
                echo("sleep^C\r\n"),
                Action::Interrupt,
                echo("x\r\n"),
                input("x\n")
            ]
        );
    }

    #[test]
    fn ctrl_d_is_eof_on_an_empty_line_and_a_flush_after_text() {
        let mut ld = LineDiscipline::new();
        assert_eq!(ld.feed(b"\x04"), vec![Action::Eof]);
        assert_eq!(
            ld.feed(b"ab\x04\x04"),
            vec![echo("ab"), input("ab"), Action::Eof]
        );
    }

    #[test]
    fn a_line_is_bounded() {
        let mut ld = LineDiscipline::new();
        ld.feed(&vec![b'x'; MAX_LINE]);
        assert_eq!(ld.feed(b"yz"), vec![echo("\x07\x07")]);
        assert_eq!(ld.pending().len(), MAX_LINE);
        let actions = ld.feed(b"\r");
        assert!(matches!(&actions[1], Action::Input(l) if l.len() == MAX_LINE + 1));
    }

    #[test]
    fn output_newlines_become_crlf() {
        assert_eq!(onlcr(b"a\nb\r\n\n"), b"a\r\nb\r\r\n\r\n");
        assert_eq!(onlcr(b""), b"");
    }

    #[test]
    fn sizes_are_checked() {
        assert_eq!(
            PtySize::from_pty_json(&json!({"size": {"cols": 80, "rows": "24"}})),
            Ok(PtySize { cols: 80, rows: 24 })
        );
        for bad in [
            json!({"size": {"cols": 80}}),
            json!({"size": {"cols": 10001, "rows": 24}}),
            json!({"size": {}}),
        ] {
            assert!(
                matches!(
                    PtySize::from_pty_json(&bad),
                    Err(SizeError::OutOfRange { .. })
                ),
                "{bad}"
            );
        }
        for bad in [
            json!({}),
            json!({"size": {"cols": -1, "rows": 2}}),
            json!(null),
        ] {
            assert_eq!(
                PtySize::from_pty_json(&bad),
                Err(SizeError::Missing),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_terminal_applies_actions_in_order_and_keeps_its_size() {
        let pty = Pty::new(PtySize { cols: 80, rows: 24 });
        let mut seen = Vec::new();
        pty.feed(b"a\r", |a| {
            seen.push(a);
            Ok::<_, ()>(())
        })
        .expect("no failure");
        assert_eq!(seen, vec![echo("a\r\n"), input("a\n")]);
        assert_eq!(pty.feed(b"b", |_| Err("refused")), Err("refused"));
        pty.resize(PtySize {
            cols: 100,
            rows: 30,
        });
        assert_eq!(
            pty.size(),
            PtySize {
                cols: 100,
                rows: 30
            }
        );
    }
}
