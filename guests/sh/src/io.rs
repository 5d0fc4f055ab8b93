//! The standard streams a command sees: a shared input source and two cloneable output sinks.
//!
//! wasm32-wasip1 has no threads and no `fork`, so every command runs in-process and pipeline stages run one
//! after another, each writing into an in-memory buffer that becomes the next stage's input. Sinks are
//! reference-counted so that `2>&1` can simply make stderr another handle to whatever stdout is.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::rc::Rc;

/// An output stream: the process's stdout/stderr, a file, or an in-memory pipe buffer.
#[derive(Clone)]
pub struct Sink(Rc<RefCell<dyn Write>>, Option<u32>);

impl Sink {
    /// Wraps any writer; the writer lives as long as the last clone of the sink.
    pub fn new<W: Write + 'static>(w: W) -> Self {
        Sink(Rc::new(RefCell::new(w)), None)
    }

    /// Wraps the writer of the process's own fd `fd` (stdout or stderr): a program the shell starts
    /// is handed the fd itself, so what it prints streams out directly.
    pub fn fd<W: Write + 'static>(w: W, fd: u32) -> Self {
        Sink(Rc::new(RefCell::new(w)), Some(fd))
    }

    /// The process's fd this sink writes to, if it is one of the process's own streams.
    pub fn raw_fd(&self) -> Option<u32> {
        self.1
    }

    /// Whether two sinks are the same stream (`2>&1`).
    #[cfg_attr(not(target_os = "wasi"), allow(dead_code))]
    pub fn same(&self, other: &Sink) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }

    /// A new in-memory sink plus the handle to read what was written into it.
    pub fn buffer() -> (Self, Rc<RefCell<Vec<u8>>>) {
        let buf = Rc::new(RefCell::new(Vec::new()));
        (Sink(buf.clone(), None), buf)
    }

    /// A sink that discards everything (`>&-`, `2>/dev/null` without a /dev in the sandbox).
    pub fn null() -> Self {
        Sink::new(io::sink())
    }

    /// Writes all bytes; errors (a closed pipe, a full disk) are deliberately ignored like a shell
    /// that keeps going when one command's output fails.
    pub fn put(&self, bytes: &[u8]) {
        if let Ok(mut w) = self.0.try_borrow_mut() {
            let _ = w.write_all(bytes);
        }
    }

    /// Flushes buffered output.
    pub fn flush(&self) {
        if let Ok(mut w) = self.0.try_borrow_mut() {
            let _ = w.flush();
        }
    }
}

/// Where a command's stdin comes from: bytes with a read cursor, optionally still backed by a reader.
///
/// The cursor is shared by clones so that `while read l; do ...; done < f` consumes one line per iteration.
pub struct Source {
    buf: Vec<u8>,
    pos: usize,
    reader: Option<Box<dyn Read>>,
    /// The process's fd the reader reads, when it is the process's own stdin.
    #[cfg_attr(not(target_os = "wasi"), allow(dead_code))]
    fd: Option<u32>,
}

/// A shared handle on a [`Source`].
#[derive(Clone)]
pub struct Input(Rc<RefCell<Source>>);

impl Input {
    /// Input made of the given bytes.
    pub fn bytes(buf: Vec<u8>) -> Self {
        Input(Rc::new(RefCell::new(Source {
            buf,
            pos: 0,
            reader: None,
            fd: None,
        })))
    }

    /// Input read lazily from the process's own stdin through `r`: a program the shell starts is handed
    /// fd 0 itself while nothing of it has been read ahead.
    pub fn stdin<R: Read + 'static>(r: R) -> Self {
        Input(Rc::new(RefCell::new(Source {
            buf: Vec::new(),
            pos: 0,
            reader: Some(Box::new(r)),
            fd: Some(0),
        })))
    }

    /// Input read from pipe `fd` (a program's output), which it owns: a program the shell starts next is
    /// handed the fd itself while nothing of it has been read.
    #[cfg(target_os = "wasi")]
    pub fn pipe(fd: u32) -> Self {
        use std::os::fd::FromRawFd;
        // SAFETY: the fd was just made by the host's `pipe` and nothing else owns it.
        let file = unsafe { std::fs::File::from_raw_fd(fd as i32) };
        Input(Rc::new(RefCell::new(Source {
            buf: Vec::new(),
            pos: 0,
            reader: Some(Box::new(file)),
            fd: Some(fd),
        })))
    }

    /// What is left of an input that is plain bytes (no reader behind it); `None` for a reader.
    #[cfg_attr(not(target_os = "wasi"), allow(dead_code))]
    pub fn bytes_left(&self) -> Option<usize> {
        let src = self.0.try_borrow().ok()?;
        src.reader
            .is_none()
            .then(|| src.buf.len().saturating_sub(src.pos))
    }

    /// The process's fd this input still reads straight from: its own stdin, with nothing buffered.
    #[cfg_attr(not(target_os = "wasi"), allow(dead_code))]
    pub fn raw_fd(&self) -> Option<u32> {
        let src = self.0.try_borrow().ok()?;
        if src.reader.is_some() && src.pos >= src.buf.len() {
            src.fd
        } else {
            None
        }
    }

    fn fill(src: &mut Source) {
        if let Some(mut r) = src.reader.take() {
            let _ = r.read_to_end(&mut src.buf);
        }
    }

    /// Everything not yet consumed.
    pub fn read_all(&self) -> Vec<u8> {
        let Ok(mut src) = self.0.try_borrow_mut() else {
            return Vec::new();
        };
        Self::fill(&mut src);
        let start = src.pos.min(src.buf.len());
        src.pos = src.buf.len();
        src.buf[start..].to_vec()
    }

    /// Reads until a whole line is buffered or the input ends, so `read` answers as soon as a line has
    /// arrived on a stdin that stays open (a pipe the host writes to) instead of waiting for its end.
    fn fill_line(src: &mut Source) {
        while !src.buf.get(src.pos..).unwrap_or(&[]).contains(&b'\n') {
            let Some(r) = src.reader.as_mut() else {
                return;
            };
            let mut chunk = [0u8; 4096];
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => src.reader = None,
                Ok(n) => src.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next line with its newline (none for a last line that lacks one), or `None` at end of input;
    /// reads no further than that line.
    pub fn read_line_raw(&self) -> Option<Vec<u8>> {
        let mut src = self.0.try_borrow_mut().ok()?;
        Self::fill_line(&mut src);
        let start = src.pos.min(src.buf.len());
        if start >= src.buf.len() {
            return None;
        }
        let rest = &src.buf[start..];
        let used = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |n| n + 1);
        let line = rest[..used].to_vec();
        src.pos = start + used;
        Some(line)
    }

    /// The next line without its newline, or `None` at end of input.
    pub fn read_line(&self) -> Option<Vec<u8>> {
        let mut line = self.read_line_raw()?;
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        Some(line)
    }
}

/// The three standard streams of one command.
#[derive(Clone)]
pub struct Io {
    /// File descriptor 0.
    pub stdin: Input,
    /// File descriptor 1.
    pub out: Sink,
    /// File descriptor 2.
    pub err: Sink,
}

impl Io {
    /// Writes a string to stdout.
    pub fn print(&self, s: &str) {
        self.out.put(s.as_bytes());
    }

    /// Writes a line to stderr, as every diagnostic is one line.
    pub fn eprintln(&self, s: &str) {
        self.err.put(format!("{s}\n").as_bytes());
    }
}

/// The message bash and coreutils print for an I/O error: strerror text without Rust's "(os error N)".
pub fn errmsg(e: &io::Error) -> String {
    use io::ErrorKind as K;
    match e.kind() {
        K::NotFound => "No such file or directory".into(),
        K::PermissionDenied => "Permission denied".into(),
        K::AlreadyExists => "File exists".into(),
        K::IsADirectory => "Is a directory".into(),
        K::NotADirectory => "Not a directory".into(),
        K::DirectoryNotEmpty => "Directory not empty".into(),
        K::InvalidInput => "Invalid argument".into(),
        _ => {
            let s = e.to_string();
            match s.find(" (os error") {
                Some(n) => s[..n].to_string(),
                None => s,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_consumed_in_order_across_clones() {
        let a = Input::bytes(b"one\ntwo\nthree".to_vec());
        let b = a.clone();
        assert_eq!(a.read_line().as_deref(), Some(&b"one"[..]));
        assert_eq!(b.read_line().as_deref(), Some(&b"two"[..]));
        assert_eq!(a.read_all(), b"three");
        assert_eq!(b.read_line(), None);
    }

    /// A stdin that has sent one line and would block for the next: a reader that must not be asked again.
    struct OneLineThenBlock(bool);

    impl Read for OneLineThenBlock {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            assert!(
                !self.0,
                "read past the first line: `read` would block on open stdin"
            );
            self.0 = true;
            buf[..5].copy_from_slice(b"one\nt");
            Ok(5)
        }
    }

    #[test]
    fn read_line_answers_once_a_line_arrived() {
        let input = Input::stdin(OneLineThenBlock(false));
        assert_eq!(input.read_line().as_deref(), Some(&b"one"[..]));
    }

    #[test]
    fn buffer_sinks_collect_output_from_every_clone() {
        let (s, buf) = Sink::buffer();
        let t = s.clone();
        s.put(b"a");
        t.put(b"b");
        assert_eq!(&*buf.borrow(), b"ab");
    }

    #[test]
    fn error_messages_match_strerror() {
        let e = io::Error::from(io::ErrorKind::NotFound);
        assert_eq!(errmsg(&e), "No such file or directory");
    }
}
