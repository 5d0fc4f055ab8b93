//! Outbound TCP: a guest's connection to an address outside its sandbox, made by the host as a real TCP
//! connection when the sandbox's [`super::EgressPolicy`] allows it, and bridged into the same bounded
//! [`Stream`] as every other connection, so a guest reads and writes it — and a pause interrupts it —
//! exactly like a connection to its own listener.
//!
//! The connect runs on a thread of its own while the guest's call waits for it in slices, looking at its
//! reason to stop (a suspend request unwinds the call, which is re-issued after the rewind; the abandoned
//! attempt ends on its own). Once connected, two threads pump bytes, one each way; each waits for room
//! or bytes in its channel before it touches the socket, so no more than the channel's bound is ever
//! held, and both end when either side closes.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::Network;
use super::channel::{Channel, Read, Write};
use super::conn::Stream;
use crate::wasi::Errno;
use crate::wasi::pipe::{WAIT_SLICE, Wake};

/// Longest a connect waits for the remote host.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Stack of a pump thread: it only moves bytes through a heap buffer.
const PUMP_STACK: usize = 64 * 1024;
/// How often a pump blocked on a silent remote host looks whether the guest has gone.
const IDLE_CHECK: Duration = Duration::from_millis(200);
/// Bytes one pump moves at a time.
const CHUNK: usize = 16 * 1024;

/// How an outbound connect ended, when it did not give a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failed {
    /// The guest is told this errno.
    Errno(Errno),
    /// The wait was cut short by this reason; nothing was connected.
    Woken(Wake),
}

/// Connects to `target` for a guest of `network`, if its policy allows.
pub(crate) fn connect(
    network: &Network,
    target: SocketAddr,
    wake: &dyn Fn() -> Option<Wake>,
) -> Result<Stream, Failed> {
    if let Err(why) = network.egress_policy().check(target.ip()) {
        network.warn_denied(target, &why);
        return Err(Failed::Errno(Errno::Acces));
    }
    let slot = Arc::new(network.slot().map_err(|_| Failed::Errno(Errno::Nfile))?);
    let (sender, receiver) = mpsc::channel();
    std::thread::Builder::new()
        .name("stasis-net-connect".into())
        .stack_size(PUMP_STACK)
        .spawn(move || {
            // The guest may have given up waiting: then the stream is simply dropped.
            let _ = sender.send(TcpStream::connect_timeout(&target, CONNECT_TIMEOUT));
        })
        .map_err(|_| Failed::Errno(Errno::Again))?;
    let tcp = loop {
        match receiver.recv_timeout(WAIT_SLICE) {
            Ok(Ok(tcp)) => break tcp,
            Ok(Err(error)) => return Err(Failed::Errno(connect_errno(&error))),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(why) = wake() {
                    return Err(Failed::Woken(why));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(Failed::Errno(Errno::Io)),
        }
    };
    let _ = tcp.set_nodelay(true);
    let local = tcp
        .local_addr()
        .map_err(|e| Failed::Errno(Errno::from(e)))?;
    let capacity = network.limits().buffer_bytes;
    let to_guest = Arc::new(Channel::new(capacity));
    let from_guest = Arc::new(Channel::new(capacity));
    let reader = tcp.try_clone().map_err(|e| Failed::Errno(Errno::from(e)))?;
    // The inbound pump wakes up this often to see whether the guest is still there, even when the
    // remote host sends nothing.
    let _ = reader.set_read_timeout(Some(IDLE_CHECK));
    {
        let to_guest = to_guest.clone();
        std::thread::Builder::new()
            .name("stasis-net-in".into())
            .stack_size(PUMP_STACK)
            .spawn(move || pump_in(reader, &to_guest))
            .map_err(|_| Failed::Errno(Errno::Again))?;
    }
    {
        let (back, from_guest) = (to_guest.clone(), from_guest.clone());
        let spawned = std::thread::Builder::new()
            .name("stasis-net-out".into())
            .stack_size(PUMP_STACK)
            .spawn(move || pump_out(tcp, &from_guest, &back));
        if spawned.is_err() {
            // The inbound pump ends once its channel's reader is gone.
            to_guest.close_reader();
            return Err(Failed::Errno(Errno::Again));
        }
    }
    Ok(Stream::from_channels(
        to_guest, from_guest, local, target, slot,
    ))
}

/// The errno a guest sees for a failed connect.
fn connect_errno(error: &std::io::Error) -> Errno {
    match error.kind() {
        std::io::ErrorKind::TimedOut => Errno::Timedout,
        _ => crate::wasi::errno::from_io_error(error),
    }
}

/// Moves what the remote host sends into `to_guest`, never more than it has room for.
fn pump_in(mut tcp: TcpStream, to_guest: &Channel) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        if to_guest.reader_closed() {
            let _ = tcp.shutdown(Shutdown::Read);
            return;
        }
        let (writable, room) = to_guest.writable();
        if !writable || room == 0 {
            to_guest.wait_writable(Instant::now() + WAIT_SLICE);
            continue;
        }
        let n = match tcp.read(&mut buf[..room.min(CHUNK)]) {
            Ok(0) => {
                to_guest.close_writer(false);
                return;
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted
                        | std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => {
                to_guest.close_writer(true);
                return;
            }
        };
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            match to_guest.write(rest) {
                Write::Written(k) => rest = &rest[k..],
                Write::Full => {
                    to_guest.wait_writable(Instant::now() + WAIT_SLICE);
                }
                Write::Closed => {
                    let _ = tcp.shutdown(Shutdown::Read);
                    return;
                }
            }
        }
    }
}

/// Moves what the guest writes into `from_guest` to the remote host; at the guest's end-of-file it
/// shuts the socket's sending side (and the whole socket once the guest reads no more either).
fn pump_out(mut tcp: TcpStream, from_guest: &Channel, to_guest: &Channel) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from_guest.read(&mut buf, false) {
            Read::Data(n) => {
                if tcp.write_all(&buf[..n]).is_err() {
                    from_guest.close_reader();
                    to_guest.close_writer(true);
                    let _ = tcp.shutdown(Shutdown::Both);
                    return;
                }
            }
            Read::Eof | Read::Reset => {
                let how = if to_guest.reader_closed() {
                    Shutdown::Both
                } else {
                    Shutdown::Write
                };
                let _ = tcp.shutdown(how);
                return;
            }
            Read::Empty => {
                from_guest.wait_readable(Instant::now() + WAIT_SLICE);
            }
        }
    }
}
