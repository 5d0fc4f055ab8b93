//! One direction of a connection: a bounded byte buffer between a writer and a reader, each of which can
//! close its side. A reader sees end-of-file once the writer closed and the bytes are drained (or a reset,
//! when the writer went away abnormally); a writer sees [`Write::Closed`] once the reader is gone. The
//! buffer never holds more than its capacity, so a peer that never reads makes writes wait, not memory grow.
//!
//! Both kinds of waiters are served: threads (the guest's blocking calls, the outbound bridge's pumps)
//! wait on a condvar in slices, and async tasks (a host server) register a [`Waker`], woken on every change.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

/// How a read went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// This many bytes (at least one).
    Data(usize),
    /// The writer closed and everything was read.
    Eof,
    /// The writer went away abnormally (the remote host reset the connection).
    Reset,
    /// Nothing to read yet.
    Empty,
}

/// How a write went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    /// This many bytes were buffered (at least one, unless the data was empty).
    Written(usize),
    /// The reader is gone: nothing will ever read this.
    Closed,
    /// The buffer is full.
    Full,
}

struct State {
    bytes: VecDeque<u8>,
    writer_closed: bool,
    reset: bool,
    reader_closed: bool,
    /// Async tasks waiting for a change (bytes, room, a close), woken and forgotten on the next one.
    wakers: Vec<Waker>,
}

/// One direction of a connection.
pub(crate) struct Channel {
    state: Mutex<State>,
    changed: Condvar,
    capacity: usize,
}

/// Most async wakers one channel keeps; a task re-registers on every poll, so more would be stale copies.
const MAX_WAKERS: usize = 8;

impl Channel {
    /// An empty, open channel buffering at most `capacity` bytes (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                bytes: VecDeque::new(),
                writer_closed: false,
                reset: false,
                reader_closed: false,
                wakers: Vec::new(),
            }),
            changed: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self, state: &mut State) {
        self.changed.notify_all();
        for waker in state.wakers.drain(..) {
            waker.wake();
        }
    }

    /// Reads what is there into `out` (or, with `peek`, copies it and leaves it).
    pub(crate) fn read(&self, out: &mut [u8], peek: bool) -> Read {
        let mut state = self.lock();
        if state.bytes.is_empty() {
            return if state.reset {
                Read::Reset
            } else if state.writer_closed {
                Read::Eof
            } else {
                Read::Empty
            };
        }
        let n = state.bytes.len().min(out.len());
        if n == 0 {
            return Read::Data(0);
        }
        if peek {
            for (slot, byte) in out.iter_mut().zip(state.bytes.iter()) {
                *slot = *byte;
            }
        } else {
            for (slot, byte) in out.iter_mut().zip(state.bytes.drain(..n)) {
                *slot = byte;
            }
            self.notify(&mut state);
        }
        Read::Data(n)
    }

    /// Buffers what fits of `data`.
    pub(crate) fn write(&self, data: &[u8]) -> Write {
        let mut state = self.lock();
        if state.reader_closed || state.writer_closed {
            return Write::Closed;
        }
        if data.is_empty() {
            return Write::Written(0);
        }
        let room = self.capacity.saturating_sub(state.bytes.len());
        if room == 0 {
            return Write::Full;
        }
        let n = room.min(data.len());
        state.bytes.extend(&data[..n]);
        self.notify(&mut state);
        Write::Written(n)
    }

    /// The writer is done: the reader gets end-of-file after the buffered bytes (or, with `reset`, a reset
    /// once they are read).
    pub(crate) fn close_writer(&self, reset: bool) {
        let mut state = self.lock();
        state.writer_closed = true;
        state.reset |= reset;
        self.notify(&mut state);
    }

    /// The reader is gone: the buffered bytes are dropped and writes fail from now on.
    pub(crate) fn close_reader(&self) {
        let mut state = self.lock();
        state.reader_closed = true;
        state.bytes = VecDeque::new();
        self.notify(&mut state);
    }

    /// Whether a read would not wait now (bytes, end-of-file or a reset), and the bytes buffered.
    pub(crate) fn readable(&self) -> (bool, usize) {
        let state = self.lock();
        (
            !state.bytes.is_empty() || state.writer_closed || state.reset,
            state.bytes.len(),
        )
    }

    /// Whether a write would not wait now (room, or no reader left), and the room left.
    pub(crate) fn writable(&self) -> (bool, usize) {
        let state = self.lock();
        let room = self.capacity.saturating_sub(state.bytes.len());
        (room > 0 || state.reader_closed || state.writer_closed, room)
    }

    /// Whether the reader is gone.
    pub(crate) fn reader_closed(&self) -> bool {
        self.lock().reader_closed
    }

    /// The bytes buffered.
    pub(crate) fn buffered(&self) -> usize {
        self.lock().bytes.len()
    }

    /// The capacity.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Waits until a read would not wait, or `until`: whether it would not.
    pub(crate) fn wait_readable(&self, until: Instant) -> bool {
        self.wait_for(until, |s, _| {
            !s.bytes.is_empty() || s.writer_closed || s.reset
        })
    }

    /// Waits until a write would not wait, or `until`: whether it would not.
    pub(crate) fn wait_writable(&self, until: Instant) -> bool {
        self.wait_for(until, |s, capacity| {
            s.bytes.len() < capacity || s.reader_closed || s.writer_closed
        })
    }

    /// Waits under the lock until `ready` holds or `until` comes, so no change between the look and the
    /// wait is missed.
    fn wait_for(&self, until: Instant, ready: impl Fn(&State, usize) -> bool) -> bool {
        let mut state = self.lock();
        loop {
            if ready(&state, self.capacity) {
                return true;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Registers `waker` to be woken on the next change.
    pub(crate) fn register(&self, waker: &Waker) {
        let mut state = self.lock();
        if state.wakers.iter().any(|w| w.will_wake(waker)) {
            return;
        }
        if state.wakers.len() >= MAX_WAKERS {
            state.wakers.remove(0);
        }
        state.wakers.push(waker.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bytes_are_bounded_then_read_in_order_then_end_of_file() {
        let channel = Channel::new(4);
        assert_eq!(channel.write(b"abcdef"), Write::Written(4));
        assert_eq!(channel.write(b"ef"), Write::Full);
        assert_eq!(channel.writable(), (false, 0));
        let mut buf = [0u8; 3];
        assert_eq!(channel.read(&mut buf, true), Read::Data(3));
        assert_eq!(channel.buffered(), 4, "a peek leaves the bytes");
        assert_eq!(channel.read(&mut buf, false), Read::Data(3));
        assert_eq!(&buf, b"abc");
        channel.close_writer(false);
        assert_eq!(channel.write(b"x"), Write::Closed);
        assert_eq!(channel.read(&mut buf, false), Read::Data(1));
        assert_eq!(channel.read(&mut buf, false), Read::Eof);
        assert!(channel.readable().0);
    }

    #[test]
    fn a_reset_comes_after_the_bytes_and_a_gone_reader_refuses_writes() {
        let channel = Channel::new(8);
        assert_eq!(channel.write(b"ab"), Write::Written(2));
        channel.close_writer(true);
        let mut buf = [0u8; 8];
        assert_eq!(channel.read(&mut buf, false), Read::Data(2));
        assert_eq!(channel.read(&mut buf, false), Read::Reset);

        let other = Channel::new(8);
        assert_eq!(other.read(&mut buf, false), Read::Empty);
        other.close_reader();
        assert!(other.reader_closed());
        assert_eq!(other.write(b"x"), Write::Closed);
        assert!(other.writable().0, "a write would not wait: it fails");
    }

    #[test]
    fn waits_end_with_a_change_or_at_their_time() {
        let channel = std::sync::Arc::new(Channel::new(1));
        let started = Instant::now();
        assert!(!channel.wait_readable(Instant::now() + Duration::from_millis(30)));
        assert!(started.elapsed() >= Duration::from_millis(30));
        let writer = channel.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            writer.write(b"z")
        });
        assert!(channel.wait_readable(Instant::now() + Duration::from_secs(30)));
        assert_eq!(thread.join().ok(), Some(Write::Written(1)));
        assert!(!channel.wait_writable(Instant::now() + Duration::from_millis(10)));
    }

    #[test]
    fn an_async_waiter_is_woken_by_the_next_change() {
        struct Flag(std::sync::atomic::AtomicBool);
        impl std::task::Wake for Flag {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let flag = std::sync::Arc::new(Flag(std::sync::atomic::AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let channel = Channel::new(8);
        channel.register(&waker);
        channel.register(&waker);
        assert!(!flag.0.load(std::sync::atomic::Ordering::SeqCst));
        channel.write(b"x");
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
    }
}
