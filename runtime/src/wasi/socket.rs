//! Sockets as fds of the WASI host: what a socket fd holds ([`Socket`]), and the work of the socket calls
//! that the `sock_*` imports and `fd_read`/`fd_write` share. The network behind them is the sandbox's
//! [`crate::net::Network`]: listening registers a port there, connecting reaches a port of the sandbox or,
//! by its egress policy, a host outside.
//!
//! Blocking calls (accept, recv, send, connect) wait in slices of [`WAIT_SLICE`] and look at their reason
//! to stop between them, as a blocking pipe read does, so a pause unwinds a guest waiting in any of them and
//! the rewind re-issues the call; a call that has already moved bytes returns them instead (a short count),
//! so a re-issued call never repeats work. `O_NONBLOCK` (set with `fd_fdstat_set_flags`, or given to
//! `sock_accept`) makes them answer `EAGAIN` instead of waiting; `SO_RCVTIMEO`/`SO_SNDTIMEO` bound the wait.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ctx::{FdEntry, Handle, WasiCtx};
use super::errno::{Errno, GuestResult};
use super::memory::GuestMemory;
use super::pipe::{WAIT_SLICE, Wake, waker};
use super::types::{fdflags, rights};
use crate::net::channel::{Read, Write};
use crate::net::conn::Stream;
use crate::net::listener::Bound;
use crate::net::outbound::{self, Failed};
use crate::net::state::{SocketFamily, SocketSaved, SocketStateSaved};
use crate::net::{ListenError, ListenerSaved, Network, NetworkLimits};

/// The rights of a socket fd.
pub(crate) const SOCKET_RIGHTS: u64 = rights::FD_READ
    | rights::FD_WRITE
    | rights::FD_FDSTAT_SET_FLAGS
    | rights::FD_FILESTAT_GET
    | rights::POLL_FD_READWRITE
    | rights::SOCK_SHUTDOWN
    | rights::SOCK_ACCEPT;

/// A socket fd's object.
#[derive(Clone)]
pub(crate) struct Socket {
    pub family: SocketFamily,
    pub state: SockState,
    pub reuse_addr: bool,
    pub keepalive: bool,
    pub recv_timeout: Option<Duration>,
    pub send_timeout: Option<Duration>,
    /// The error `SO_ERROR` reports (and clears): the last failed connect's.
    pub error: Option<Errno>,
}

/// Where a socket is in its life.
#[derive(Clone)]
pub(crate) enum SockState {
    /// Opened, perhaps bound.
    Open { bound: Option<SocketAddr> },
    /// Listening; the port stays in the network while a holder of the [`Bound`] lives.
    Listening(Arc<Bound>),
    /// Connected.
    Connected(Stream),
    /// A connection that ended with a pause: reads see end-of-file, writes `EPIPE`.
    Closed { local: SocketAddr, peer: SocketAddr },
}

impl Socket {
    /// A fresh socket of `family`.
    pub(crate) fn new(family: SocketFamily) -> Self {
        Self {
            family,
            state: SockState::Open { bound: None },
            reuse_addr: false,
            keepalive: false,
            recv_timeout: None,
            send_timeout: None,
            error: None,
        }
    }

    fn connected(family: SocketFamily, stream: Stream) -> Self {
        Self {
            state: SockState::Connected(stream),
            ..Self::new(family)
        }
    }

    /// The socket as saved; a listener it holds goes into `listeners`, by id.
    pub(crate) fn save(&self) -> SocketSaved {
        let state = match &self.state {
            SockState::Open { bound } => SocketStateSaved::Open { bound: *bound },
            SockState::Listening(bound) => SocketStateSaved::Listening {
                listener: bound.listener().id(),
            },
            SockState::Connected(stream) => SocketStateSaved::Closed {
                local: stream.local(),
                peer: stream.peer(),
            },
            SockState::Closed { local, peer } => SocketStateSaved::Closed {
                local: *local,
                peer: *peer,
            },
        };
        SocketSaved {
            family: self.family,
            state,
            reuse_addr: self.reuse_addr,
            keepalive: self.keepalive,
            recv_timeout_ns: self.recv_timeout.map(|d| d.as_nanos() as u64),
            send_timeout_ns: self.send_timeout.map(|d| d.as_nanos() as u64),
        }
    }

    /// The listener the socket listens on, as saved.
    pub(crate) fn saved_listener(&self) -> Option<ListenerSaved> {
        match &self.state {
            SockState::Listening(bound) => Some(ListenerSaved {
                id: bound.listener().id(),
                addr: bound.listener().addr(),
                backlog: bound.listener().backlog() as u32,
            }),
            _ => None,
        }
    }

    /// A socket back from its saved state; a listening one takes its [`Bound`] from `listener`.
    pub(crate) fn restore(
        saved: &SocketSaved,
        listener: impl FnOnce(u64) -> Option<Arc<Bound>>,
    ) -> Option<Self> {
        let state = match &saved.state {
            SocketStateSaved::Open { bound } => SockState::Open { bound: *bound },
            SocketStateSaved::Listening { listener: id } => SockState::Listening(listener(*id)?),
            SocketStateSaved::Closed { local, peer } => SockState::Closed {
                local: *local,
                peer: *peer,
            },
        };
        Some(Self {
            family: saved.family,
            state,
            reuse_addr: saved.reuse_addr,
            keepalive: saved.keepalive,
            recv_timeout: saved.recv_timeout_ns.map(Duration::from_nanos),
            send_timeout: saved.send_timeout_ns.map(Duration::from_nanos),
            error: None,
        })
    }

    /// Whether a read (or an accept) would not wait, and the bytes (or connections) waiting.
    pub(crate) fn readable(&self) -> (bool, usize) {
        match &self.state {
            SockState::Listening(bound) => {
                let pending = bound.listener().pending();
                (pending > 0 || bound.listener().is_closed(), pending)
            }
            SockState::Connected(stream) => stream.rx().readable(),
            SockState::Open { .. } | SockState::Closed { .. } => (true, 0),
        }
    }

    /// Whether a write would not wait, and the room left.
    pub(crate) fn writable(&self) -> (bool, usize) {
        match &self.state {
            SockState::Connected(stream) => stream.tx().writable(),
            _ => (true, 0),
        }
    }

    /// The socket's own address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        match &self.state {
            SockState::Open { bound: Some(addr) } => *addr,
            SockState::Open { bound: None } => unspecified(self.family, 0),
            SockState::Listening(bound) => bound.listener().addr(),
            SockState::Connected(stream) => stream.local(),
            SockState::Closed { local, .. } => *local,
        }
    }
}

/// The unspecified address of `family` at `port`.
pub(crate) fn unspecified(family: SocketFamily, port: u16) -> SocketAddr {
    match family {
        SocketFamily::Inet4 => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        SocketFamily::Inet6 => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
    }
}

/// Whether `ip` is an address of the sandbox itself: what a guest may bind, and where a connection
/// reaches the sandbox's own listeners.
fn is_own(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    ip.is_loopback() || ip.is_unspecified()
}

impl FdEntry {
    /// The fd entry of a socket with fd flags `fdflags`.
    pub(crate) fn socket(socket: Socket, fdflags: u16) -> Self {
        Self {
            handle: Handle::Socket(socket),
            preopen: None,
            is_preopen: false,
            rel_path: String::new(),
            lookupflags: 0,
            oflags: 0,
            fdflags,
            rights_base: SOCKET_RIGHTS,
            rights_inheriting: SOCKET_RIGHTS,
            read: true,
            write: true,
            offset: 0,
            readdir_cookie: 0,
        }
    }
}

impl WasiCtx {
    /// Gives the context its sandbox's network.
    pub(crate) fn set_network(&mut self, network: Network) {
        self.network = Some(network);
    }

    /// The sandbox's network; a context made without one (`stasis run`, a bare [`WasiCtx`]) gets one of
    /// its own on first use.
    pub(crate) fn network(&mut self) -> Network {
        self.network
            .get_or_insert_with(|| Network::new("process", NetworkLimits::default()))
            .clone()
    }

    /// Every listener an fd listens on, into `out`, by id.
    pub(crate) fn listeners_into(&self, out: &mut std::collections::BTreeMap<u64, ListenerSaved>) {
        for entry in self.fds.values() {
            if let Handle::Socket(socket) = &entry.handle
                && let Some(saved) = socket.saved_listener()
            {
                out.entry(saved.id).or_insert(saved);
            }
        }
    }

    fn socket(&mut self, fd: u32) -> GuestResult<(&mut Socket, u16)> {
        let e = self.entry(fd)?;
        let flags = e.fdflags;
        match &mut e.handle {
            Handle::Socket(socket) => Ok((socket, flags)),
            _ => Err(Errno::Notsock),
        }
    }
}

/// `sock_open`: a new socket fd of address family `af` (1 IPv4, 2 IPv6) and type `ty` (2 stream, or 0
/// any, which is stream; datagram sockets are not supported).
pub(crate) fn open(ctx: &mut WasiCtx, af: u32, ty: u32) -> GuestResult<u32> {
    let family = match af {
        1 => SocketFamily::Inet4,
        2 => SocketFamily::Inet6,
        _ => return Err(Errno::Afnosupport),
    };
    match ty {
        0 | 2 => {}
        1 => return Err(Errno::Protonosupport),
        _ => return Err(Errno::Inval),
    }
    ctx.insert(FdEntry::socket(Socket::new(family), 0))
}

/// `sock_bind`: records the address the socket will listen on; nothing is bound on the host.
pub(crate) fn bind(ctx: &mut WasiCtx, fd: u32, addr: SocketAddr) -> GuestResult<()> {
    let network = ctx.network();
    let (socket, _) = ctx.socket(fd)?;
    if !matches!(socket.state, SockState::Open { bound: None }) {
        return Err(Errno::Inval);
    }
    if !is_own(addr.ip()) {
        return Err(Errno::Addrnotavail);
    }
    if addr.port() != 0 && network.is_listening(addr.port()) {
        return Err(Errno::Addrinuse);
    }
    socket.state = SockState::Open { bound: Some(addr) };
    Ok(())
}

/// `sock_listen`: registers the bound port (an ephemeral one when unbound) in the sandbox's network.
pub(crate) fn listen(ctx: &mut WasiCtx, fd: u32, backlog: u32) -> GuestResult<()> {
    let network = ctx.network();
    let (socket, _) = ctx.socket(fd)?;
    let addr = match &socket.state {
        SockState::Open { bound } => bound.unwrap_or_else(|| unspecified(socket.family, 0)),
        // Listening again only changes the backlog on Linux; the first one stays.
        SockState::Listening(_) => return Ok(()),
        SockState::Connected(_) | SockState::Closed { .. } => return Err(Errno::Inval),
    };
    let listener = network
        .listen(addr, backlog as usize)
        .map_err(|error| match error {
            ListenError::InUse => Errno::Addrinuse,
            ListenError::TooMany => Errno::Nfile,
            ListenError::Closed => Errno::Netdown,
        })?;
    socket.state = SockState::Listening(Arc::new(Bound::new(listener, network)));
    Ok(())
}

/// Why a blocking socket call stopped waiting, turned into its outcome: `None` to unwind (nothing was
/// done), or `EINTR`.
fn woken(why: Wake) -> GuestResult<Option<u32>> {
    match why {
        Wake::Suspend => Ok(None),
        Wake::Interrupted => Err(Errno::Intr),
    }
}

/// The end of the next wait slice, bounded by `deadline` and the call's own deadline.
fn slice_end(deadline: Option<Instant>, call: Option<Instant>) -> Instant {
    let end = Instant::now() + WAIT_SLICE;
    [deadline, call]
        .into_iter()
        .flatten()
        .fold(end, Instant::min)
}

/// `ETIMEDOUT` once the call into the guest is past its deadline ([`WasiCtx::set_deadline`]): a handler
/// call must not outlive its time waiting on a socket, where the engine's deadline does not reach.
fn check_call(call: Option<Instant>) -> GuestResult<()> {
    match call {
        Some(d) if Instant::now() >= d => Err(Errno::Timedout),
        _ => Ok(()),
    }
}

/// `sock_accept`: the next connection waiting on the listening socket, as a new fd with `new_flags`
/// (only `NONBLOCK` means something); `None` when a suspend request came while it waited.
pub(crate) fn accept(ctx: &mut WasiCtx, fd: u32, new_flags: u16) -> GuestResult<Option<u32>> {
    let wake = waker(ctx.interrupt.clone(), ctx.suspendable());
    let call = ctx.deadline;
    let (socket, flags) = ctx.socket(fd)?;
    let SockState::Listening(bound) = &socket.state else {
        return Err(Errno::Inval);
    };
    let (bound, family, timeout) = (bound.clone(), socket.family, socket.recv_timeout);
    let listener = bound.listener();
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let stream = loop {
        if let Some(stream) = listener.take() {
            break stream;
        }
        if listener.is_closed() {
            return Err(Errno::Inval);
        }
        if flags & fdflags::NONBLOCK != 0 || deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Errno::Again);
        }
        if let Some(why) = wake() {
            return woken(why);
        }
        check_call(call)?;
        listener.wait(slice_end(deadline, call));
    };
    let entry = FdEntry::socket(
        Socket::connected(family, stream),
        new_flags & fdflags::NONBLOCK,
    );
    ctx.insert(entry).map(Some)
}

/// `sock_connect`: connects to a listener of the sandbox (a loopback or unspecified address with a
/// port a guest listens on) or, when the egress policy allows, to a host outside. `None` when a suspend
/// request came while it waited.
pub(crate) fn connect(ctx: &mut WasiCtx, fd: u32, addr: SocketAddr) -> GuestResult<Option<()>> {
    let network = ctx.network();
    let wake = waker(ctx.interrupt.clone(), ctx.suspendable());
    let (socket, _) = ctx.socket(fd)?;
    match socket.state {
        SockState::Open { .. } => {}
        SockState::Listening(_) => return Err(Errno::Inval),
        SockState::Connected(_) | SockState::Closed { .. } => return Err(Errno::Isconn),
    }
    if addr.port() == 0 {
        return Err(Errno::Connrefused);
    }
    let own = if is_own(addr.ip()) {
        let local_ip = match addr.ip() {
            ip if ip.is_unspecified() => unspecified(socket.family, 0).ip(),
            ip => ip,
        };
        network.connect_guest(addr.port(), local_ip)
    } else {
        None
    };
    let stream = match own {
        Some(Ok(stream)) => stream,
        Some(Err(errno)) => {
            socket.error = Some(errno);
            return Err(errno);
        }
        None => match outbound::connect(&network, addr, &wake) {
            Ok(stream) => stream,
            Err(Failed::Errno(errno)) => {
                let (socket, _) = ctx.socket(fd)?;
                socket.error = Some(errno);
                return Err(errno);
            }
            Err(Failed::Woken(why)) => return woken(why).map(|_| None),
        },
    };
    let (socket, _) = ctx.socket(fd)?;
    socket.state = SockState::Connected(stream);
    Ok(Some(()))
}

/// Reads from a socket into `iovs` (`sock_recv`, `fd_read`): the bytes read (0 at end-of-file), or `None`
/// when a suspend request came before anything was read. `peek` leaves the bytes there; `waitall` waits
/// until every buffer is full (or the peer ends).
pub(crate) fn recv(
    m: &mut GuestMemory<'_>,
    ctx: &mut WasiCtx,
    fd: u32,
    iovs: u32,
    n: u32,
    peek: bool,
    waitall: bool,
) -> GuestResult<Option<u32>> {
    let iovs = m.read_iovecs(iovs, n)?;
    let wake = waker(ctx.interrupt.clone(), ctx.suspendable());
    let call = ctx.deadline;
    let (socket, flags) = ctx.socket(fd)?;
    let stream = match &socket.state {
        SockState::Connected(stream) => stream.clone(),
        SockState::Closed { .. } => return Ok(Some(0)),
        SockState::Open { .. } | SockState::Listening(_) => return Err(Errno::Notconn),
    };
    let nonblock = flags & fdflags::NONBLOCK != 0;
    let deadline = socket
        .recv_timeout
        .and_then(|t| Instant::now().checked_add(t));
    let mut total: u32 = 0;
    'iovs: for iov in iovs.iter().take(if peek { 1 } else { usize::MAX }) {
        let buf = m.slice_mut(iov.ptr, iov.len)?;
        let mut got = 0usize;
        while got < buf.len() {
            match stream.rx().read(&mut buf[got..], peek) {
                Read::Data(k) => {
                    got += k;
                    total = total.saturating_add(k as u32);
                    if !waitall || peek {
                        break;
                    }
                }
                Read::Eof => break 'iovs,
                Read::Reset if total == 0 => return Err(Errno::Connreset),
                Read::Reset => break 'iovs,
                Read::Empty => {
                    if total > 0 && !waitall {
                        break 'iovs;
                    }
                    if nonblock || deadline.is_some_and(|d| Instant::now() >= d) {
                        if total == 0 {
                            return Err(Errno::Again);
                        }
                        break 'iovs;
                    }
                    if let Some(why) = wake() {
                        if total == 0 {
                            return woken(why);
                        }
                        break 'iovs;
                    }
                    if total == 0 {
                        check_call(call)?;
                    } else if call.is_some_and(|d| Instant::now() >= d) {
                        break 'iovs;
                    }
                    stream.rx().wait_readable(slice_end(deadline, call));
                }
            }
        }
        if got < buf.len() && !waitall {
            break;
        }
    }
    Ok(Some(total))
}

/// Writes `iovs` into a socket (`sock_send`, `fd_write`): the bytes written, or `None` when a suspend
/// request came before anything was written.
pub(crate) fn send(
    m: &mut GuestMemory<'_>,
    ctx: &mut WasiCtx,
    fd: u32,
    iovs: u32,
    n: u32,
) -> GuestResult<Option<u32>> {
    let iovs = m.read_iovecs(iovs, n)?;
    let wake = waker(ctx.interrupt.clone(), ctx.suspendable());
    let call = ctx.deadline;
    let (socket, flags) = ctx.socket(fd)?;
    let stream = match &socket.state {
        SockState::Connected(stream) => stream.clone(),
        SockState::Closed { .. } => return Err(Errno::Pipe),
        SockState::Open { .. } | SockState::Listening(_) => return Err(Errno::Notconn),
    };
    let nonblock = flags & fdflags::NONBLOCK != 0;
    let deadline = socket
        .send_timeout
        .and_then(|t| Instant::now().checked_add(t));
    let mut total: u32 = 0;
    'iovs: for iov in iovs {
        let mut data = m.slice(iov.ptr, iov.len)?;
        while !data.is_empty() {
            match stream.tx().write(data) {
                Write::Written(k) => {
                    total = total.saturating_add(k as u32);
                    data = &data[k..];
                }
                Write::Closed if total == 0 => return Err(Errno::Pipe),
                Write::Closed => break 'iovs,
                Write::Full => {
                    // Only a write that has moved nothing yet waits or unwinds; after that, a short count.
                    if total > 0 {
                        break 'iovs;
                    }
                    if nonblock || deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(Errno::Again);
                    }
                    if let Some(why) = wake() {
                        return woken(why);
                    }
                    check_call(call)?;
                    stream.tx().wait_writable(slice_end(deadline, call));
                }
            }
        }
    }
    Ok(Some(total))
}

/// `sock_shutdown`: `how` 1 ends reading, 2 writing, 3 both.
pub(crate) fn shutdown(ctx: &mut WasiCtx, fd: u32, how: u32) -> GuestResult<()> {
    if !(1..=3).contains(&how) {
        return Err(Errno::Inval);
    }
    let (socket, _) = ctx.socket(fd)?;
    match &socket.state {
        SockState::Connected(stream) => {
            if how & 1 != 0 {
                stream.rx().close_reader();
            }
            if how & 2 != 0 {
                stream.tx().close_writer(false);
            }
            Ok(())
        }
        SockState::Closed { .. } => Ok(()),
        SockState::Open { .. } | SockState::Listening(_) => Err(Errno::Notconn),
    }
}

/// The socket's own address (`sock_getlocaladdr`).
pub(crate) fn local_addr(ctx: &mut WasiCtx, fd: u32) -> GuestResult<SocketAddr> {
    Ok(ctx.socket(fd)?.0.local_addr())
}

/// The peer's address (`sock_getpeeraddr`): `ENOTCONN` unless connected.
pub(crate) fn peer_addr(ctx: &mut WasiCtx, fd: u32) -> GuestResult<SocketAddr> {
    match &ctx.socket(fd)?.0.state {
        SockState::Connected(stream) => Ok(stream.peer()),
        _ => Err(Errno::Notconn),
    }
}

/// The `SOL_SOCKET` options of the WasmEdge socket ABI, by number.
pub(crate) mod opt {
    pub const REUSEADDR: u32 = 0;
    pub const TYPE: u32 = 1;
    pub const ERROR: u32 = 2;
    pub const DONTROUTE: u32 = 3;
    pub const BROADCAST: u32 = 4;
    pub const SNDBUF: u32 = 5;
    pub const RCVBUF: u32 = 6;
    pub const KEEPALIVE: u32 = 7;
    pub const OOBINLINE: u32 = 8;
    pub const LINGER: u32 = 9;
    pub const RCVLOWAT: u32 = 10;
    pub const RCVTIMEO: u32 = 11;
    pub const SNDTIMEO: u32 = 12;
    pub const ACCEPTCONN: u32 = 13;
    pub const BINDTODEVICE: u32 = 14;
}

/// The value of an option, as `getsockopt` writes it.
pub(crate) enum OptValue {
    Int(i32),
    /// A `timeval`; `None` is zero (no timeout).
    Time(Option<Duration>),
    /// Bytes (an empty device name).
    Bytes(Vec<u8>),
}

/// `sock_getsockopt` of `SOL_SOCKET` option `name`.
pub(crate) fn get_option(
    ctx: &mut WasiCtx,
    fd: u32,
    level: u32,
    name: u32,
) -> GuestResult<OptValue> {
    if level != 0 {
        return Err(Errno::Noprotoopt);
    }
    let capacity = ctx.network().limits().buffer_bytes;
    let (socket, _) = ctx.socket(fd)?;
    Ok(match name {
        opt::REUSEADDR => OptValue::Int(i32::from(socket.reuse_addr)),
        // The socket ABI's numbering: 1 datagram, 2 stream.
        opt::TYPE => OptValue::Int(2),
        opt::ERROR => OptValue::Int(socket.error.take().map_or(0, |e| e.raw())),
        opt::KEEPALIVE => OptValue::Int(i32::from(socket.keepalive)),
        opt::DONTROUTE | opt::BROADCAST | opt::OOBINLINE | opt::LINGER => OptValue::Int(0),
        opt::RCVLOWAT => OptValue::Int(1),
        opt::SNDBUF | opt::RCVBUF => OptValue::Int(i32::try_from(capacity).unwrap_or(i32::MAX)),
        opt::RCVTIMEO => OptValue::Time(socket.recv_timeout),
        opt::SNDTIMEO => OptValue::Time(socket.send_timeout),
        opt::ACCEPTCONN => {
            OptValue::Int(i32::from(matches!(socket.state, SockState::Listening(_))))
        }
        opt::BINDTODEVICE => OptValue::Bytes(Vec::new()),
        _ => return Err(Errno::Noprotoopt),
    })
}

/// `sock_setsockopt` of `SOL_SOCKET` option `name` to `value` (the guest's bytes, at most 16).
pub(crate) fn set_option(
    ctx: &mut WasiCtx,
    fd: u32,
    level: u32,
    name: u32,
    value: &[u8],
) -> GuestResult<()> {
    if level != 0 {
        return Err(Errno::Noprotoopt);
    }
    let (socket, _) = ctx.socket(fd)?;
    let int = || -> GuestResult<i32> {
        let bytes: [u8; 4] = value
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or(Errno::Inval)?;
        Ok(i32::from_le_bytes(bytes))
    };
    match name {
        opt::REUSEADDR => socket.reuse_addr = int()? != 0,
        opt::KEEPALIVE => socket.keepalive = int()? != 0,
        // Accepted and without effect in a virtual network: buffers have the network's size, nothing is
        // routed or broadcast, and closing never lingers.
        opt::DONTROUTE
        | opt::BROADCAST
        | opt::OOBINLINE
        | opt::LINGER
        | opt::RCVLOWAT
        | opt::SNDBUF
        | opt::RCVBUF => {
            int()?;
        }
        opt::RCVTIMEO => socket.recv_timeout = timeval(value)?,
        opt::SNDTIMEO => socket.send_timeout = timeval(value)?,
        // A sandbox has no devices to bind to; an empty name (unbinding) is fine.
        opt::BINDTODEVICE if value.is_empty() => {}
        opt::BINDTODEVICE => return Err(Errno::Nodev),
        opt::TYPE | opt::ERROR | opt::ACCEPTCONN => return Err(Errno::Noprotoopt),
        _ => return Err(Errno::Noprotoopt),
    }
    Ok(())
}

/// A guest `timeval` (wasm32: 64-bit seconds and microseconds; a 32-bit pair is accepted too) as a
/// timeout: zero is none.
fn timeval(value: &[u8]) -> GuestResult<Option<Duration>> {
    let (secs, micros) = match value.len() {
        16 => (
            i64::from_le_bytes(value[..8].try_into().map_err(|_| Errno::Inval)?),
            i64::from_le_bytes(value[8..16].try_into().map_err(|_| Errno::Inval)?),
        ),
        8 => (
            i64::from(i32::from_le_bytes(
                value[..4].try_into().map_err(|_| Errno::Inval)?,
            )),
            i64::from(i32::from_le_bytes(
                value[4..8].try_into().map_err(|_| Errno::Inval)?,
            )),
        ),
        _ => return Err(Errno::Inval),
    };
    if secs < 0 || !(0..1_000_000).contains(&micros) {
        return Err(Errno::Dom);
    }
    let timeout = Duration::from_secs(secs as u64) + Duration::from_micros(micros as u64);
    Ok((!timeout.is_zero()).then_some(timeout))
}

/// A timeout as the 16-byte wasm32 `timeval`.
pub(crate) fn timeval_bytes(timeout: Option<Duration>) -> [u8; 16] {
    let d = timeout.unwrap_or_default();
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(d.as_secs() as i64).to_le_bytes());
    b[8..].copy_from_slice(&i64::from(d.subsec_micros()).to_le_bytes());
    b
}
