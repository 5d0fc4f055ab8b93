//! Pipes between the processes of a sandbox: a host object with a bounded buffer, shared by the fds of
//! every process that holds one of its ends. A read waits for bytes and sees end-of-file once no write end
//! is left; a write waits for room and fails with `EPIPE` once no read end is left — what a POSIX pipe does.
//!
//! Ends are counted: cloning an end (a spawn handing it to a child, `fd_renumber` keeping it) adds one,
//! dropping it (`fd_close`, a process ending) removes one and wakes the other side, so a reader blocked on a
//! pipe whose last writer exits sees end-of-file at once.
//!
//! Waits poll their reason to stop (a suspend request, a stop, an interrupt) every [`WAIT_SLICE`]: a pipe
//! does not know the processes that wait on it, and a short slice keeps a pause's latency bounded without
//! wiring every interrupt to every pipe.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::Interrupt;

/// How long a blocked read or write waits before it looks at its reason to stop again.
pub(crate) const WAIT_SLICE: Duration = Duration::from_millis(5);

/// Bytes a pipe buffers before writers wait: Linux's default pipe size.
pub const PIPE_CAPACITY: usize = 64 * 1024;

/// Ids of live pipes, unique within the host process: what a saved fd names its pipe by (a restored
/// pipe gets a new one).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A pipe: its buffer and how many ends of each kind are open.
pub(crate) struct Pipe {
    id: u64,
    state: Mutex<Buffer>,
    changed: Condvar,
    capacity: usize,
}

struct Buffer {
    bytes: VecDeque<u8>,
    readers: usize,
    writers: usize,
}

/// One open end of a pipe, as an fd holds it.
pub(crate) struct PipeEnd {
    pipe: Arc<Pipe>,
    write: bool,
}

/// How a read from a pipe went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PipeRead {
    /// This many bytes; 0 is end-of-file (no writer left and nothing buffered).
    Data(usize),
    /// Nothing to read yet and the read was not to block.
    WouldBlock,
    /// The wait was cut short by this reason.
    Woken(Wake),
}

/// How a write into a pipe went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PipeWrite {
    /// This many bytes were buffered (at least one).
    Written(usize),
    /// No read end is left: `EPIPE`.
    Broken,
    /// The pipe is full and the write was not to block.
    WouldBlock,
    /// The wait was cut short by this reason.
    Woken(Wake),
}

/// Why a wait on a pipe (or for a child) stopped before it was satisfied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// A pause asks the process to suspend: the call unwinds and is re-issued after the rewind.
    Suspend,
    /// An interrupt (Ctrl-C) or a stop: the call fails with `EINTR` (a stop then traps at the next call).
    Interrupted,
}

/// The reason a blocking call of a process with `interrupt` stops waiting: a stop or an interrupt
/// (`EINTR`; a stop then traps), or a suspend request when the call may be suspended.
pub(crate) fn waker(
    interrupt: Option<Arc<Interrupt>>,
    suspendable: bool,
) -> impl Fn() -> Option<Wake> {
    move || {
        let i = interrupt.as_ref()?;
        if i.stopped().is_some() {
            Some(Wake::Interrupted)
        } else if suspendable && i.suspend_requested() {
            Some(Wake::Suspend)
        } else if i.take_sigint() {
            Some(Wake::Interrupted)
        } else {
            None
        }
    }
}

impl fmt::Debug for PipeEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipeEnd")
            .field("pipe", &self.pipe.id)
            .field("write", &self.write)
            .finish()
    }
}

impl Pipe {
    /// A new pipe holding up to `capacity` bytes: its read and write ends.
    pub(crate) fn open(capacity: usize) -> (PipeEnd, PipeEnd) {
        Self::holding(capacity, Vec::new())
    }

    /// A new pipe already holding `bytes` (a restored one): its read and write ends.
    pub(crate) fn holding(capacity: usize, bytes: Vec<u8>) -> (PipeEnd, PipeEnd) {
        let pipe = Arc::new(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(Buffer {
                bytes: bytes.into(),
                readers: 1,
                writers: 1,
            }),
            changed: Condvar::new(),
            capacity: capacity.max(1),
        });
        (
            PipeEnd {
                pipe: pipe.clone(),
                write: false,
            },
            PipeEnd { pipe, write: true },
        )
    }

    fn lock(&self) -> MutexGuard<'_, Buffer> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, Buffer>) -> MutexGuard<'a, Buffer> {
        match self.changed.wait_timeout(guard, WAIT_SLICE) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        }
    }
}

impl PipeEnd {
    /// The pipe's id, the same for both of its ends.
    pub(crate) fn id(&self) -> u64 {
        self.pipe.id
    }

    /// What the pipe holds that no one has read yet (what a pause saves of it).
    pub(crate) fn buffered(&self) -> Vec<u8> {
        self.pipe.lock().bytes.iter().copied().collect()
    }

    /// Whether this is the write end.
    pub(crate) fn is_write(&self) -> bool {
        self.write
    }

    /// Reads into `out`. With `block`, waits until there is something, no writer is left, or `wake` gives
    /// a reason to stop waiting; bytes that are there are read even when a reason is pending.
    pub(crate) fn read(
        &self,
        out: &mut [u8],
        block: bool,
        wake: &dyn Fn() -> Option<Wake>,
    ) -> PipeRead {
        if out.is_empty() {
            return PipeRead::Data(0);
        }
        let mut state = self.pipe.lock();
        while state.bytes.is_empty() && state.writers > 0 {
            if !block {
                return PipeRead::WouldBlock;
            }
            if let Some(why) = wake() {
                return PipeRead::Woken(why);
            }
            state = self.pipe.wait(state);
        }
        let n = state.bytes.len().min(out.len());
        for (slot, byte) in out.iter_mut().zip(state.bytes.drain(..n)) {
            *slot = byte;
        }
        if n > 0 {
            self.pipe.changed.notify_all();
        }
        PipeRead::Data(n)
    }

    /// Writes what fits of `data`. With `block`, waits for room (or for the last reader to leave); a write
    /// that finds room writes at once, so a short count only means the pipe filled up.
    pub(crate) fn write(
        &self,
        data: &[u8],
        block: bool,
        wake: &dyn Fn() -> Option<Wake>,
    ) -> PipeWrite {
        let mut state = self.pipe.lock();
        loop {
            if state.readers == 0 {
                return PipeWrite::Broken;
            }
            if data.is_empty() {
                return PipeWrite::Written(0);
            }
            let room = self.pipe.capacity.saturating_sub(state.bytes.len());
            if room > 0 {
                let n = room.min(data.len());
                state.bytes.extend(&data[..n]);
                self.pipe.changed.notify_all();
                return PipeWrite::Written(n);
            }
            if !block {
                return PipeWrite::WouldBlock;
            }
            if let Some(why) = wake() {
                return PipeWrite::Woken(why);
            }
            state = self.pipe.wait(state);
        }
    }

    /// Whether a read would not block now (bytes, or end-of-file) — for `poll_oneoff`.
    pub(crate) fn readable(&self) -> (bool, usize) {
        let state = self.pipe.lock();
        (
            !state.bytes.is_empty() || state.writers == 0,
            state.bytes.len(),
        )
    }

    /// Whether a write would not block now (room, or no reader left) — for `poll_oneoff`.
    pub(crate) fn writable(&self) -> (bool, usize) {
        let state = self.pipe.lock();
        let room = self.pipe.capacity.saturating_sub(state.bytes.len());
        (room > 0 || state.readers == 0, room)
    }

    /// A second handle on the same end (`dup`): the end stays open until both are dropped.
    pub(crate) fn duplicate(&self) -> Self {
        let mut state = self.pipe.lock();
        if self.write {
            state.writers += 1;
        } else {
            state.readers += 1;
        }
        Self {
            pipe: self.pipe.clone(),
            write: self.write,
        }
    }
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        let mut state = self.pipe.lock();
        if self.write {
            state.writers = state.writers.saturating_sub(1);
        } else {
            state.readers = state.readers.saturating_sub(1);
        }
        self.pipe.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never() -> Option<Wake> {
        None
    }

    #[test]
    fn bytes_flow_then_end_of_file_when_the_last_writer_leaves() {
        let (r, w) = Pipe::open(8);
        let w2 = w.duplicate();
        assert_eq!(w.write(b"abc", true, &never), PipeWrite::Written(3));
        drop(w);
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf, true, &never), PipeRead::Data(3));
        assert_eq!(&buf[..3], b"abc");
        assert_eq!(r.read(&mut buf, false, &never), PipeRead::WouldBlock);
        drop(w2);
        assert_eq!(r.read(&mut buf, true, &never), PipeRead::Data(0));
    }

    #[test]
    fn a_write_without_readers_is_broken() {
        let (r, w) = Pipe::open(8);
        drop(r);
        assert_eq!(w.write(b"x", true, &never), PipeWrite::Broken);
    }

    #[test]
    fn a_full_pipe_makes_writers_wait_until_a_read_makes_room() {
        let (r, w) = Pipe::open(4);
        assert_eq!(w.write(b"abcdef", true, &never), PipeWrite::Written(4));
        assert_eq!(w.write(b"ef", false, &never), PipeWrite::WouldBlock);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 3];
            loop {
                match r.read(&mut buf, true, &never) {
                    PipeRead::Data(0) => return got,
                    PipeRead::Data(n) => got.extend_from_slice(&buf[..n]),
                    other => panic!("unexpected {other:?}"),
                }
            }
        });
        let mut rest: &[u8] = b"efghij";
        while !rest.is_empty() {
            match w.write(rest, true, &never) {
                PipeWrite::Written(n) => rest = &rest[n..],
                other => panic!("unexpected {other:?}"),
            }
        }
        drop(w);
        assert_eq!(reader.join().ok(), Some(b"abcdefghij".to_vec()));
    }

    #[test]
    fn a_wait_ends_for_its_reason_and_keeps_the_bytes() {
        let (r, w) = Pipe::open(2);
        let mut buf = [0u8; 2];
        assert_eq!(
            r.read(&mut buf, true, &|| Some(Wake::Suspend)),
            PipeRead::Woken(Wake::Suspend)
        );
        assert_eq!(w.write(b"ab", true, &never), PipeWrite::Written(2));
        assert_eq!(
            w.write(b"c", true, &|| Some(Wake::Interrupted)),
            PipeWrite::Woken(Wake::Interrupted)
        );
        assert_eq!(r.buffered(), b"ab");
        assert_eq!(
            r.read(&mut buf, true, &|| Some(Wake::Suspend)),
            PipeRead::Data(2),
            "bytes that are there are read even when a suspend is asked for"
        );
    }
}
