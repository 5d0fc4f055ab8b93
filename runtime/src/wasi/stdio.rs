//! Standard input and output of a sandbox: stdin from bytes or a reader; stdout and stderr captured in bounded
//! buffers (bytes past the bound are dropped and a flag records it) and/or handed to a callback as written.

use std::fmt;
use std::io::Read;
use std::sync::Arc;

/// Where a sandbox's stdin comes from.
pub enum Stdin {
    /// Reads return end-of-file at once.
    Empty,
    /// Reads consume these bytes, then end-of-file.
    Bytes(Vec<u8>),
    /// Reads are served by this reader (blocking the guest while it blocks).
    Reader(Box<dyn Read + Send>),
}

impl fmt::Debug for Stdin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stdin::Empty => f.write_str("Stdin::Empty"),
            Stdin::Bytes(b) => write!(f, "Stdin::Bytes({} bytes)", b.len()),
            Stdin::Reader(_) => f.write_str("Stdin::Reader(..)"),
        }
    }
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
}

impl fmt::Debug for OutputSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputSink")
            .field("capture_limit", &self.capture_limit)
            .field("callback", &self.callback.as_ref().map(|_| ".."))
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
            callback: None,
        }
    }

    /// Hands every chunk to `f` as it is written.
    pub fn callback(f: impl Fn(&[u8]) + Send + Sync + 'static) -> Self {
        Self {
            capture_limit: None,
            callback: Some(Arc::new(f)),
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

    /// Reads into `buf`; 0 at end of input.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match &mut self.source {
            Stdin::Empty => Ok(0),
            Stdin::Bytes(b) => {
                let rest = b.get(self.pos..).unwrap_or(&[]);
                let n = rest.len().min(buf.len());
                buf[..n].copy_from_slice(&rest[..n]);
                self.pos += n;
                Ok(n)
            }
            Stdin::Reader(r) => r.read(buf),
        }
    }
}

/// Live stdout or stderr.
pub(crate) struct OutputState {
    sink: OutputSink,
    buf: Vec<u8>,
    truncated: bool,
}

impl OutputState {
    pub(crate) fn new(sink: OutputSink) -> Self {
        Self {
            sink,
            buf: Vec::new(),
            truncated: false,
        }
    }

    /// Accepts a chunk of output: always reported as fully written to the guest, captured up to the bound.
    pub(crate) fn write(&mut self, data: &[u8]) {
        if let Some(cb) = &self.sink.callback {
            cb(data);
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
    fn stdin_bytes_then_eof() {
        let mut s = StdinState::new(Stdin::Bytes(b"xyz".to_vec()));
        let mut b = [0u8; 2];
        assert_eq!(s.read(&mut b).ok(), Some(2));
        assert_eq!(s.read(&mut b).ok(), Some(1));
        assert_eq!(s.read(&mut b).ok(), Some(0));
    }
}
