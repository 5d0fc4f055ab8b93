//! Standard input and output of a sandbox: stdin from bytes, a reader or a pipe the host writes to later;
//! stdout and stderr captured in bounded buffers (bytes past the bound are dropped and a flag records it)
//! and/or handed to a callback as written (also bounded when the sink says so).

use std::collections::VecDeque;
use std::fmt;
use std::io::Read;
use std::sync::{Arc, Condvar, Mutex};

/// Where a sandbox's stdin comes from.
pub enum Stdin {
    /// Reads return end-of-file at once.
    Empty,
    /// Reads consume these bytes, then end-of-file.
    Bytes(Vec<u8>),
    /// Reads are served by this reader (blocking the guest while it blocks).
    Reader(Box<dyn Read + Send>),
    /// Reads wait for what the host writes into the pipe, and end-of-file once it is closed.
    Pipe(StdinPipe),
}

impl fmt::Debug for Stdin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stdin::Empty => f.write_str("Stdin::Empty"),
            Stdin::Bytes(b) => write!(f, "Stdin::Bytes({} bytes)", b.len()),
            Stdin::Reader(_) => f.write_str("Stdin::Reader(..)"),
            Stdin::Pipe(_) => f.write_str("Stdin::Pipe(..)"),
        }
    }
}

/// Why bytes could not be written into a [`StdinPipe`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipeError {
    /// The pipe was closed (by the host, or because its process ended).
    #[error("stdin is closed")]
    Closed,
    /// The guest has not read what was written before, and this would exceed the pipe's capacity.
    #[error("stdin already holds {pending} unread bytes; at most {capacity} may wait")]
    Full {
        /// Bytes waiting to be read.
        pending: usize,
        /// The pipe's capacity.
        capacity: usize,
    },
}

/// The host's end of a guest's stdin: bytes written here are what the guest reads next; closing it gives
/// the guest end-of-file once it has read everything. Cheap to clone; clones are the same pipe. Writes
/// never block: a pipe holds at most its capacity of unread bytes and refuses more.
#[derive(Clone)]
pub struct StdinPipe {
    shared: Arc<PipeShared>,
}

struct PipeShared {
    state: Mutex<PipeState>,
    readable: Condvar,
    capacity: usize,
}

#[derive(Default)]
struct PipeState {
    buf: VecDeque<u8>,
    /// One-shot ends of file ([`StdinPipe::write_eof`]), as the number of bytes of `buf` before each, in
    /// order: a read stops at the first, and a read at it returns 0 and drops it.
    eofs: VecDeque<usize>,
    closed: bool,
}

impl fmt::Debug for StdinPipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StdinPipe")
            .field("capacity", &self.shared.capacity)
            .finish_non_exhaustive()
    }
}

impl StdinPipe {
    /// An open, empty pipe holding at most `capacity` unread bytes.
    pub fn new(capacity: usize) -> Self {
        Self {
            shared: Arc::new(PipeShared {
                state: Mutex::new(PipeState::default()),
                readable: Condvar::new(),
                capacity,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PipeState> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `data` to what the guest will read.
    pub fn write(&self, data: &[u8]) -> Result<(), PipeError> {
        let mut state = self.state();
        if state.closed {
            return Err(PipeError::Closed);
        }
        let pending = state.buf.len();
        if pending.saturating_add(data.len()) > self.shared.capacity {
            return Err(PipeError::Full {
                pending,
                capacity: self.shared.capacity,
            });
        }
        state.buf.extend(data);
        self.shared.readable.notify_all();
        Ok(())
    }

    /// Queues a one-shot end of file after what was written so far: the read that reaches it returns 0,
    /// and reads after it go on with what is written next (what Ctrl-D does on a terminal). Counted
    /// against the capacity like a byte, so a flood of them is refused too.
    pub fn write_eof(&self) -> Result<(), PipeError> {
        let mut state = self.state();
        if state.closed {
            return Err(PipeError::Closed);
        }
        let pending = state.buf.len() + state.eofs.len();
        if pending >= self.shared.capacity {
            return Err(PipeError::Full {
                pending,
                capacity: self.shared.capacity,
            });
        }
        let at = state.buf.len();
        state.eofs.push_back(at);
        self.shared.readable.notify_all();
        Ok(())
    }

    /// Drops what the guest has not read yet (a terminal's Ctrl-C flushes typed-ahead input).
    pub fn discard(&self) {
        let mut state = self.state();
        state.buf.clear();
        state.eofs.clear();
    }

    /// Closes the pipe: the guest reads what is left, then end-of-file. Closing twice is harmless.
    pub fn close(&self) {
        self.state().closed = true;
        self.shared.readable.notify_all();
    }

    /// Whether the pipe has been closed.
    pub fn is_closed(&self) -> bool {
        self.state().closed
    }

    /// Wakes a reader blocked on the pipe so it looks at its interrupt again (a suspend request).
    pub fn wake(&self) {
        let _state = self.state();
        self.shared.readable.notify_all();
    }

    /// What the guest has not read yet, and whether the pipe is closed: what a pause saves of it (pending
    /// one-shot ends of file are not kept).
    pub fn snapshot(&self) -> (Vec<u8>, bool) {
        let state = self.state();
        (state.buf.iter().copied().collect(), state.closed)
    }

    /// Reads what is there into `out`, up to the next one-shot end of file. With `block`, waits until
    /// something is, the pipe is closed, or `wake` gives a reason to stop waiting
    /// ([`StdinRead::Suspend`] or [`StdinRead::Interrupted`]).
    fn read(&self, out: &mut [u8], block: bool, wake: &dyn Fn() -> Option<StdinRead>) -> StdinRead {
        if out.is_empty() {
            return StdinRead::Data(0);
        }
        let mut state = self.state();
        while state.buf.is_empty() && state.eofs.is_empty() && !state.closed {
            if !block {
                return StdinRead::WouldBlock;
            }
            if let Some(why) = wake() {
                return why;
            }
            state = self
                .shared
                .readable
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
        if state.eofs.front() == Some(&0) {
            state.eofs.pop_front();
            return StdinRead::Data(0);
        }
        let before_eof = state.eofs.front().copied().unwrap_or(usize::MAX);
        let n = state.buf.len().min(out.len()).min(before_eof);
        for (slot, byte) in out.iter_mut().zip(state.buf.drain(..n)) {
            *slot = byte;
        }
        for at in state.eofs.iter_mut() {
            *at -= n;
        }
        StdinRead::Data(n)
    }
}

/// How a read from stdin went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StdinRead {
    /// This many bytes were read; 0 is end-of-file.
    Data(usize),
    /// Nothing to read now (a read that was not to block).
    WouldBlock,
    /// The reader was asked to suspend while it waited: nothing was read.
    Suspend,
    /// An interrupt (Ctrl-C) came while it waited: nothing was read, and the guest is told `EINTR`.
    Interrupted,
}

/// A callback receiving output bytes as the guest writes them.
pub type OutputCallback = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Where a sandbox's stdout or stderr goes: a bounded capture buffer, a callback, both, or neither.
#[derive(Clone, Default)]
pub struct OutputSink {
    /// Capture at most this many bytes (drained with `WasiCtx::take_stdout`/`take_stderr`); `None` captures
    /// nothing.
    pub capture_limit: Option<usize>,
    /// Called with every chunk the guest writes, whether or not it is captured.
    pub callback: Option<OutputCallback>,
    /// Hand at most this many bytes in all to the callback; the rest is dropped (and flagged as
    /// truncated). `None` hands over everything.
    pub callback_limit: Option<usize>,
}

impl fmt::Debug for OutputSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputSink")
            .field("capture_limit", &self.capture_limit)
            .field("callback", &self.callback.as_ref().map(|_| ".."))
            .field("callback_limit", &self.callback_limit)
            .finish()
    }
}

impl OutputSink {
    /// Drops all output (writes still succeed).
    pub fn discard() -> Self {
        Self::default()
    }

    /// Captures up to `max_bytes` bytes.
    pub fn capture(max_bytes: usize) -> Self {
        Self {
            capture_limit: Some(max_bytes),
            ..Self::default()
        }
    }

    /// Hands every chunk to `f` as it is written.
    pub fn callback(f: impl Fn(&[u8]) + Send + Sync + 'static) -> Self {
        Self {
            callback: Some(Arc::new(f)),
            ..Self::default()
        }
    }

    /// Streams output: hands every chunk to `f` as it is written, up to `max_bytes` in all (what a
    /// server relays to a client as the guest writes it, bounded as captured output is).
    pub fn stream(max_bytes: usize, f: impl Fn(&[u8]) + Send + Sync + 'static) -> Self {
        Self {
            callback: Some(Arc::new(f)),
            callback_limit: Some(max_bytes),
            ..Self::default()
        }
    }

    /// Also hands every chunk to `f`.
    pub fn with_callback(mut self, f: impl Fn(&[u8]) + Send + Sync + 'static) -> Self {
        self.callback = Some(Arc::new(f));
        self
    }
}

/// Live stdin.
pub(crate) struct StdinState {
    source: Stdin,
    pos: usize,
}

impl StdinState {
    pub(crate) fn new(source: Stdin) -> Self {
        Self { source, pos: 0 }
    }

    /// Reads into `buf`: 0 at end of input. A pipe with nothing in it blocks when `block` (until
    /// something arrives, it closes, or `wake` gives a reason to stop waiting) and is
    /// [`StdinRead::WouldBlock`] otherwise; the other sources never block.
    pub(crate) fn read(
        &mut self,
        buf: &mut [u8],
        block: bool,
        wake: &dyn Fn() -> Option<StdinRead>,
    ) -> std::io::Result<StdinRead> {
        match &mut self.source {
            Stdin::Empty => Ok(StdinRead::Data(0)),
            Stdin::Bytes(b) => {
                let rest = b.get(self.pos..).unwrap_or(&[]);
                let n = rest.len().min(buf.len());
                buf[..n].copy_from_slice(&rest[..n]);
                self.pos += n;
                Ok(StdinRead::Data(n))
            }
            Stdin::Reader(r) => r.read(buf).map(StdinRead::Data),
            Stdin::Pipe(pipe) => Ok(pipe.read(buf, block, wake)),
        }
    }

    /// The pipe stdin reads from, if it is one.
    pub(crate) fn pipe(&self) -> Option<&StdinPipe> {
        match &self.source {
            Stdin::Pipe(pipe) => Some(pipe),
            _ => None,
        }
    }

    /// Replaces the source (a resumed command gets its stdin anew).
    pub(crate) fn replace(&mut self, source: Stdin) {
        self.source = source;
        self.pos = 0;
    }
}

/// Live stdout or stderr.
pub(crate) struct OutputState {
    sink: OutputSink,
    buf: Vec<u8>,
    truncated: bool,
    /// Bytes handed to the callback so far.
    streamed: usize,
}

impl OutputState {
    pub(crate) fn new(sink: OutputSink) -> Self {
        Self {
            sink,
            buf: Vec::new(),
            truncated: false,
            streamed: 0,
        }
    }

    /// Accepts a chunk of output: always reported as fully written to the guest, captured and streamed up
    /// to their bounds.
    pub(crate) fn write(&mut self, data: &[u8]) {
        if let Some(cb) = &self.sink.callback {
            let room = self
                .sink
                .callback_limit
                .map_or(data.len(), |limit| limit.saturating_sub(self.streamed));
            let n = room.min(data.len());
            if n > 0 {
                cb(&data[..n]);
                self.streamed += n;
            }
            if n < data.len() {
                self.truncated = true;
            }
        }
        if let Some(limit) = self.sink.capture_limit {
            let room = limit.saturating_sub(self.buf.len());
            let n = room.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            if n < data.len() {
                self.truncated = true;
            }
        }
    }

    pub(crate) fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn truncated(&self) -> bool {
        self.truncated
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn capture_is_bounded_and_flags_excess() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let mut out = OutputState::new(
            OutputSink::capture(4)
                .with_callback(move |b| s2.lock().expect("lock").extend_from_slice(b)),
        );
        out.write(b"abc");
        assert!(!out.truncated());
        out.write(b"def");
        assert!(out.truncated());
        assert_eq!(out.take(), b"abcd");
        assert_eq!(*seen.lock().expect("lock"), b"abcdef");
    }

    #[test]
    fn streamed_output_is_bounded() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let mut out = OutputState::new(OutputSink::stream(5, move |b| {
            s2.lock().expect("lock").extend_from_slice(b)
        }));
        out.write(b"abc");
        out.write(b"defg");
        out.write(b"h");
        assert!(out.truncated());
        assert_eq!(*seen.lock().expect("lock"), b"abcde");
        assert!(out.take().is_empty());
    }

    #[test]
    fn pipe_delivers_writes_then_eof_after_close() {
        let pipe = StdinPipe::new(8);
        let mut s = StdinState::new(Stdin::Pipe(pipe.clone()));
        let writer = pipe.clone();
        let thread = std::thread::spawn(move || {
            writer.write(b"hi").expect("open");
            writer.close();
        });
        let mut got = Vec::new();
        let mut b = [0u8; 4];
        loop {
            let n = match s.read(&mut b, true, &|| None).expect("read") {
                StdinRead::Data(n) => n,
                other => panic!("a blocking read gave {other:?}"),
            };
            if n == 0 {
                break;
            }
            got.extend_from_slice(&b[..n]);
        }
        thread.join().expect("writer");
        assert_eq!(got, b"hi");
        assert_eq!(pipe.write(b"x"), Err(PipeError::Closed));
    }

    #[test]
    fn pipe_refuses_more_than_its_capacity() {
        let pipe = StdinPipe::new(3);
        pipe.write(b"ab").expect("room");
        assert_eq!(
            pipe.write(b"cd"),
            Err(PipeError::Full {
                pending: 2,
                capacity: 3
            })
        );
    }

    #[test]
    fn stdin_bytes_then_eof() {
        let mut s = StdinState::new(Stdin::Bytes(b"xyz".to_vec()));
        let mut b = [0u8; 2];
        let never = || None;
        assert_eq!(s.read(&mut b, true, &never).ok(), Some(StdinRead::Data(2)));
        assert_eq!(s.read(&mut b, true, &never).ok(), Some(StdinRead::Data(1)));
        assert_eq!(s.read(&mut b, true, &never).ok(), Some(StdinRead::Data(0)));
    }

    #[test]
    fn an_empty_pipe_would_block_or_suspends() {
        let pipe = StdinPipe::new(8);
        let mut s = StdinState::new(Stdin::Pipe(pipe.clone()));
        let mut b = [0u8; 4];
        assert_eq!(
            s.read(&mut b, false, &|| None).ok(),
            Some(StdinRead::WouldBlock)
        );
        assert_eq!(
            s.read(&mut b, true, &|| Some(StdinRead::Suspend)).ok(),
            Some(StdinRead::Suspend)
        );
        pipe.write(b"ab").expect("room");
        assert_eq!(pipe.snapshot(), (b"ab".to_vec(), false));
        assert_eq!(
            s.read(&mut b, true, &|| Some(StdinRead::Suspend)).ok(),
            Some(StdinRead::Data(2)),
            "data is read even when a suspend is asked for"
        );
    }

    #[test]
    fn a_one_shot_eof_ends_one_read_and_input_goes_on() {
        let pipe = StdinPipe::new(8);
        let mut s = StdinState::new(Stdin::Pipe(pipe.clone()));
        let mut b = [0u8; 8];
        let never = || None;
        pipe.write(b"ab").expect("room");
        pipe.write_eof().expect("room");
        pipe.write(b"c").expect("room");
        assert_eq!(s.read(&mut b, true, &never).ok(), Some(StdinRead::Data(2)));
        assert_eq!(s.read(&mut b, true, &never).ok(), Some(StdinRead::Data(0)));
        assert_eq!(s.read(&mut b, true, &never).ok(), Some(StdinRead::Data(1)));
        assert_eq!(b[0], b'c');
        pipe.write_eof().expect("room");
        pipe.discard();
        assert_eq!(
            s.read(&mut b, true, &|| Some(StdinRead::Interrupted)).ok(),
            Some(StdinRead::Interrupted),
            "a discarded end of file is gone, and an interrupt ends the wait"
        );
    }
}
