//! The host's end of a connection to a guest's listener: what [`super::Network::connect`] returns.
//!
//! It is a blocking [`std::io::Read`] + [`std::io::Write`] (with optional timeouts, past which a call fails
//! with [`std::io::ErrorKind::TimedOut`]), and has what an async runtime needs to wrap it without a thread
//! per connection: [`HostStream::try_read`] / [`HostStream::try_write`], which never wait
//! ([`std::io::ErrorKind::WouldBlock`]), and [`HostStream::poll_read_ready`] /
//! [`HostStream::poll_write_ready`], which register the task's waker to be woken on the next change.
//!
//! Writes never buffer more than the connection's bound: a guest that does not read makes them wait (or
//! `WouldBlock`). Dropping the stream closes the connection both ways; [`HostStream::shutdown_write`]
//! only ends what the host sends, so the guest reads end-of-file and can still answer.

use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::channel::{Read, Write};
use super::conn::Stream;

/// The host's end of a connection into a sandbox.
#[derive(Debug)]
pub struct HostStream {
    stream: Stream,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

/// Longest a blocking call waits at a time before it looks at the clock again.
const SLICE: Duration = Duration::from_millis(50);

impl HostStream {
    pub(crate) fn new(stream: Stream) -> Self {
        Self {
            stream,
            read_timeout: None,
            write_timeout: None,
        }
    }

    /// The address the guest sees this connection come from.
    pub fn peer_addr_in_sandbox(&self) -> SocketAddr {
        self.stream.local()
    }

    /// The guest's address of the connection (its listening address).
    pub fn guest_addr(&self) -> SocketAddr {
        self.stream.peer()
    }

    /// Makes blocking reads fail with `TimedOut` after waiting `timeout` (`None`: wait as long as it takes).
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    /// Makes blocking writes fail with `TimedOut` after waiting `timeout` for room.
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.write_timeout = timeout;
    }

    /// Reads what the guest sent, without waiting: `Ok(0)` is end-of-file (the guest closed or shut down
    /// its side), `WouldBlock` means nothing is there yet.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.stream.rx().read(buf, false) {
            Read::Data(n) => Ok(n),
            Read::Eof => Ok(0),
            Read::Reset => Err(io::ErrorKind::ConnectionReset.into()),
            Read::Empty => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Writes what fits of `buf` without waiting: `WouldBlock` when the buffer to the guest is full,
    /// `BrokenPipe` once the guest closed its end.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self.stream.tx().write(buf) {
            Write::Written(n) => Ok(n),
            Write::Closed => Err(io::ErrorKind::BrokenPipe.into()),
            Write::Full => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Waits until a read would not block (bytes, end-of-file) or `timeout` passes: whether it would not.
    pub fn wait_readable(&self, timeout: Duration) -> bool {
        let until = Instant::now().checked_add(timeout);
        match until {
            Some(until) => self.stream.rx().wait_readable(until),
            None => loop {
                if self.stream.rx().wait_readable(Instant::now() + SLICE) {
                    return true;
                }
            },
        }
    }

    /// Waits until a write would not block (room, or the guest gone) or `timeout` passes: whether it
    /// would not.
    pub fn wait_writable(&self, timeout: Duration) -> bool {
        let until = Instant::now().checked_add(timeout);
        match until {
            Some(until) => self.stream.tx().wait_writable(until),
            None => loop {
                if self.stream.tx().wait_writable(Instant::now() + SLICE) {
                    return true;
                }
            },
        }
    }

    /// Whether a read would not block now; if it would, `cx`'s waker is woken on the next change.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let rx = self.stream.rx();
        if rx.readable().0 {
            return Poll::Ready(());
        }
        rx.register(cx.waker());
        // Looked at again: a change between the first look and the registration woke no one.
        if rx.readable().0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Whether a write would not block now; if it would, `cx`'s waker is woken on the next change.
    pub fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let tx = self.stream.tx();
        if tx.writable().0 {
            return Poll::Ready(());
        }
        tx.register(cx.waker());
        if tx.writable().0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Ends what the host sends: the guest reads end-of-file after the bytes buffered; reading the
    /// guest's answer goes on.
    pub fn shutdown_write(&self) {
        self.stream.tx().close_writer(false);
    }

    /// Bytes written and not read by the guest yet.
    pub fn pending_to_guest(&self) -> usize {
        self.stream.tx().buffered()
    }

    /// The most bytes that can wait for the guest to read them.
    pub fn buffer_capacity(&self) -> usize {
        self.stream.tx().capacity()
    }

    fn deadline(timeout: Option<Duration>) -> Option<Instant> {
        timeout.and_then(|t| Instant::now().checked_add(t))
    }
}

impl io::Read for HostStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let deadline = Self::deadline(self.read_timeout);
        loop {
            match self.try_read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
            let slice_end = Instant::now() + SLICE;
            let until = deadline.map_or(slice_end, |d| d.min(slice_end));
            if !self.stream.rx().wait_readable(until)
                && deadline.is_some_and(|d| Instant::now() >= d)
            {
                return Err(io::ErrorKind::TimedOut.into());
            }
        }
    }
}

impl io::Write for HostStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let deadline = Self::deadline(self.write_timeout);
        loop {
            match self.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
            let slice_end = Instant::now() + SLICE;
            let until = deadline.map_or(slice_end, |d| d.min(slice_end));
            if !self.stream.tx().wait_writable(until)
                && deadline.is_some_and(|d| Instant::now() >= d)
            {
                return Err(io::ErrorKind::TimedOut.into());
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
