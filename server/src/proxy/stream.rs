//! A guest connection ([`HostStream`]) as tokio's `AsyncRead`/`AsyncWrite`, so hyper can speak HTTP over
//! it: each call tries without blocking and, when the guest's buffer is empty (or full), registers the
//! task's waker with the stream and answers `Pending`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use stasis::HostStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One connection to a guest's listening port, for async code.
pub struct GuestStream {
    stream: HostStream,
}

impl GuestStream {
    /// Wraps `stream`.
    pub fn new(stream: HostStream) -> Self {
        Self { stream }
    }
}

impl AsyncRead for GuestStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            match self.stream.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Ready again means something changed between the try and the registration: try again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.stream.poll_read_ready(cx))
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for GuestStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.stream.try_write(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.stream.poll_write_ready(cx))
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A write lands in the guest's receive buffer at once: there is nothing held back to flush.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream.shutdown_write();
        Poll::Ready(Ok(()))
    }
}
