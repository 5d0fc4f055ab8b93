//! A sandbox's virtual network: the ports its guests listen on, the connections to them, and the policy
//! for connections out of it.
//!
//! Nothing here binds a host port. A guest's `bind` + `listen` on port P registers P in its sandbox's
//! [`Network`] ([`listener`]); the host side (the server) reaches it with [`Network::connect`], which queues
//! a connection on P's bounded backlog and hands back a [`HostStream`] ([`host`]), an ordinary blocking
//! `Read + Write` with non-blocking and poll-style methods for an async runtime. Connections ([`conn`]) are
//! bounded byte buffers each way ([`channel`]), so a guest that never reads makes the host's writes wait,
//! never memory grow. A guest connecting to a port of its own sandbox (`127.0.0.1:P`, `localhost:P`)
//! reaches its listener the same way; any other address is a real TCP connection out of the host
//! ([`outbound`]), allowed or refused by the sandbox's [`EgressPolicy`] ([`egress`]).
//!
//! All processes of a sandbox share its network (it lives as long as the sandbox, not as a process).
//! Its bounds — listeners, connections, buffer bytes — are [`NetworkLimits`]. A pause keeps the listening
//! ports and the policy ([`state`]); open connections end at the pause and come back closed.

pub(crate) mod channel;
pub(crate) mod conn;
pub mod egress;
pub(crate) mod host;
pub(crate) mod listener;
pub(crate) mod outbound;
pub mod state;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub use egress::{EgressDenied, EgressPolicy, IpNet, IpNetError, SpecialKind};
pub use host::HostStream;
pub use state::{ListenerSaved, NetworkState};

use conn::Stream;
use listener::{Listener, QueueError};

/// The bounds of one sandbox's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkLimits {
    /// Most ports listened on at once; one more `listen` is `ENFILE`.
    pub max_listeners: usize,
    /// Most connections alive at once — accepted, waiting in a backlog, or outbound; one more is
    /// [`ConnectError::TooManyConnections`] for the host, `ENFILE` for a guest.
    pub max_connections: usize,
    /// Bytes buffered in each direction of a connection; a writer finding it full waits.
    pub buffer_bytes: usize,
    /// Most connections a listener's backlog holds, whatever backlog the guest asks for.
    pub max_backlog: usize,
}

impl Default for NetworkLimits {
    fn default() -> Self {
        Self {
            max_listeners: 64,
            max_connections: 512,
            buffer_bytes: 64 * 1024,
            max_backlog: 128,
        }
    }
}

/// Why [`Network::connect`] could not reach a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// No guest listens on the port.
    #[error("nothing listens on port {0} in the sandbox")]
    NotListening(u16),
    /// The port's backlog is full: the guest does not accept connections as fast as they come.
    #[error("the backlog of port {0} is full")]
    BacklogFull(u16),
    /// The sandbox has as many connections as it may.
    #[error("the sandbox has {0} connections, as many as it may")]
    TooManyConnections(usize),
    /// The network is closed: the sandbox was paused or is gone.
    #[error("the sandbox's network is closed (paused or gone)")]
    Closed,
}

/// Why a guest could not listen on a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListenError {
    /// Another socket of the sandbox listens on it.
    InUse,
    /// The sandbox listens on as many ports as it may.
    TooMany,
    /// The network is closed.
    Closed,
}

/// A sandbox's virtual network; clones are the same network.
#[derive(Clone)]
pub struct Network {
    shared: Arc<Shared>,
}

struct Shared {
    /// What log lines call the sandbox.
    name: String,
    limits: NetworkLimits,
    state: Mutex<Inner>,
    /// Live connections (see [`Slot`]).
    connections: AtomicUsize,
    /// Next ephemeral port to try for a `listen` without a port, and for the local end of connections.
    next_ephemeral: AtomicU64,
}

struct Inner {
    listeners: BTreeMap<u16, Arc<Listener>>,
    egress: EgressPolicy,
    closed: bool,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("sandbox", &self.shared.name)
            .field("ports", &self.listening_ports())
            .finish_non_exhaustive()
    }
}

/// One connection's share of its network's connection bound, given back when dropped.
pub(crate) struct Slot {
    network: Arc<Shared>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.network.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// First port of the ephemeral range (IANA's), where ports a guest did not choose come from.
const EPHEMERAL_START: u16 = 49152;

impl Network {
    /// A new, empty network for the sandbox that log lines call `name`, with the default policy.
    pub fn new(name: impl Into<String>, limits: NetworkLimits) -> Self {
        Self {
            shared: Arc::new(Shared {
                name: name.into(),
                limits,
                state: Mutex::new(Inner {
                    listeners: BTreeMap::new(),
                    egress: EgressPolicy::default(),
                    closed: false,
                }),
                connections: AtomicUsize::new(0),
                next_ephemeral: AtomicU64::new(0),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What log lines call the sandbox.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The network's bounds.
    pub fn limits(&self) -> NetworkLimits {
        self.shared.limits
    }

    /// Whether `other` is the same network.
    pub fn same(&self, other: &Network) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// The ports guests listen on, ascending.
    pub fn listening_ports(&self) -> Vec<u16> {
        self.lock().listeners.keys().copied().collect()
    }

    /// Whether a guest listens on `port`.
    pub fn is_listening(&self, port: u16) -> bool {
        self.lock().listeners.contains_key(&port)
    }

    /// The policy for outbound connections.
    pub fn egress_policy(&self) -> EgressPolicy {
        self.lock().egress.clone()
    }

    /// Replaces the policy for outbound connections; connections already open stay open.
    pub fn set_egress_policy(&self, policy: EgressPolicy) {
        self.lock().egress = policy;
    }

    /// How many connections are alive (accepted, waiting to be, or outbound).
    pub fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::Acquire)
    }

    /// Whether the network was closed ([`Network::close`]).
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Opens a connection to the guest listening on `port`, as a client outside the sandbox: the
    /// connection waits in the port's backlog until the guest accepts it, and the host writes and reads
    /// through the returned stream meanwhile (what it writes waits in the buffer).
    pub fn connect(&self, port: u16) -> Result<HostStream, ConnectError> {
        let listener = self.listener(port)?;
        let slot = self.slot().map_err(ConnectError::TooManyConnections)?;
        let client = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.ephemeral_port());
        let (host, guest) = Stream::pair(
            self.shared.limits.buffer_bytes,
            client,
            listener.addr_for_peer(),
            slot,
        );
        match listener.queue(guest) {
            Ok(()) => Ok(HostStream::new(host)),
            Err(QueueError::Full) => Err(ConnectError::BacklogFull(port)),
            Err(QueueError::Closed) => Err(ConnectError::NotListening(port)),
        }
    }

    /// Closes the network: listeners are dropped with the connections waiting in their backlogs, and
    /// [`Network::connect`] answers [`ConnectError::Closed`] from now on. What a pause or kill does to the
    /// live sandbox's network; connections already accepted end with their guests' fds.
    pub fn close(&self) {
        let listeners = {
            let mut inner = self.lock();
            inner.closed = true;
            std::mem::take(&mut inner.listeners)
        };
        for listener in listeners.values() {
            listener.close();
        }
    }

    /// The listener on `port`.
    fn listener(&self, port: u16) -> Result<Arc<Listener>, ConnectError> {
        let inner = self.lock();
        if inner.closed {
            return Err(ConnectError::Closed);
        }
        inner
            .listeners
            .get(&port)
            .cloned()
            .ok_or(ConnectError::NotListening(port))
    }

    /// A share of the connection bound, or the bound when none is left.
    pub(crate) fn slot(&self) -> Result<Slot, usize> {
        let max = self.shared.limits.max_connections;
        let mut current = self.shared.connections.load(Ordering::Acquire);
        loop {
            if current >= max {
                return Err(max);
            }
            match self.shared.connections.compare_exchange(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Ok(Slot {
                        network: self.shared.clone(),
                    });
                }
                Err(now) => current = now,
            }
        }
    }

    /// A port from the ephemeral range, for the client end of a connection (never 0).
    pub(crate) fn ephemeral_port(&self) -> u16 {
        let n = self.shared.next_ephemeral.fetch_add(1, Ordering::Relaxed);
        EPHEMERAL_START + (n % u64::from(u16::MAX - EPHEMERAL_START + 1)) as u16
    }

    /// Registers a listener on `addr`'s port (an ephemeral one when it is 0) with a backlog of
    /// `backlog`, bounded by the limits.
    pub(crate) fn listen(
        &self,
        addr: SocketAddr,
        backlog: usize,
    ) -> Result<Arc<Listener>, ListenError> {
        let backlog = backlog.clamp(1, self.shared.limits.max_backlog.max(1));
        let mut inner = self.lock();
        if inner.closed {
            return Err(ListenError::Closed);
        }
        if inner.listeners.len() >= self.shared.limits.max_listeners {
            return Err(ListenError::TooMany);
        }
        let port = if addr.port() == 0 {
            let free = (0..=u16::MAX - EPHEMERAL_START)
                .map(|_| self.ephemeral_port())
                .find(|p| !inner.listeners.contains_key(p));
            free.ok_or(ListenError::TooMany)?
        } else {
            addr.port()
        };
        if inner.listeners.contains_key(&port) {
            return Err(ListenError::InUse);
        }
        let listener = Arc::new(Listener::new(SocketAddr::new(addr.ip(), port), backlog));
        inner.listeners.insert(port, listener.clone());
        Ok(listener)
    }

    /// Removes `listener` from the ports (if it is still the one there).
    pub(crate) fn unlisten(&self, listener: &Arc<Listener>) {
        let mut inner = self.lock();
        if inner
            .listeners
            .get(&listener.port())
            .is_some_and(|l| Arc::ptr_eq(l, listener))
        {
            inner.listeners.remove(&listener.port());
        }
    }

    /// Connects a guest of the sandbox to its own listener on `port`: the end for the connecting socket,
    /// at `local`. `None` when nothing listens there (the address is then judged as an outbound one).
    pub(crate) fn connect_guest(
        &self,
        port: u16,
        local_ip: IpAddr,
    ) -> Option<Result<Stream, crate::wasi::Errno>> {
        use crate::wasi::Errno;
        let listener = self.listener(port).ok()?;
        let slot = match self.slot() {
            Ok(slot) => slot,
            Err(_) => return Some(Err(Errno::Nfile)),
        };
        let local = SocketAddr::new(local_ip, self.ephemeral_port());
        let (mine, theirs) = Stream::pair(
            self.shared.limits.buffer_bytes,
            local,
            listener.addr_for_peer(),
            slot,
        );
        Some(match listener.queue(theirs) {
            Ok(()) => Ok(mine),
            Err(_) => Err(Errno::Connrefused),
        })
    }

    /// Logs an outbound connection the policy refused, naming the sandbox and the target.
    pub(crate) fn warn_denied(&self, target: SocketAddr, why: &EgressDenied) {
        tracing::warn!(
            sandbox = %self.shared.name,
            %target,
            reason = %why,
            "outbound connection denied by the sandbox's egress policy"
        );
    }

    /// Re-creates a saved listener (a resumed sandbox's, before its processes run).
    pub(crate) fn restore_listener(
        &self,
        saved: &ListenerSaved,
    ) -> Result<Arc<Listener>, ListenError> {
        self.listen(saved.addr(), saved.backlog as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    fn any(port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))
    }

    #[test]
    fn the_host_side_can_move_between_threads_and_tasks() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Network>();
        send_sync::<HostStream>();
    }

    #[test]
    fn a_port_is_listened_on_once_and_listeners_are_bounded() {
        let network = Network::new(
            "test",
            NetworkLimits {
                max_listeners: 2,
                ..NetworkLimits::default()
            },
        );
        let a = network.listen(any(80), 4).expect("a first listener");
        assert_eq!(network.listen(any(80), 4).err(), Some(ListenError::InUse));
        let b = network.listen(any(0), 4).expect("an ephemeral port");
        assert!(b.port() >= EPHEMERAL_START);
        assert_eq!(network.listen(any(81), 4).err(), Some(ListenError::TooMany));
        assert_eq!(network.listening_ports(), vec![80, b.port()]);
        network.unlisten(&a);
        assert_eq!(network.listening_ports(), vec![b.port()]);
    }

    #[test]
    fn the_host_connects_through_the_backlog_and_a_closed_network_refuses() {
        let network = Network::new("test", NetworkLimits::default());
        assert_eq!(
            network.connect(80).err(),
            Some(ConnectError::NotListening(80))
        );
        let listener = network.listen(any(80), 1).expect("listen");
        let mut host = network.connect(80).expect("connect");
        assert_eq!(
            network.connect(80).err(),
            Some(ConnectError::BacklogFull(80))
        );
        let guest = listener.take().expect("a connection waits");
        assert_eq!(guest.local(), SocketAddr::from((Ipv4Addr::LOCALHOST, 80)));
        assert_eq!(guest.peer(), host.peer_addr_in_sandbox());
        host.write_all(b"hi").expect("write");
        let mut buf = [0u8; 2];
        assert_eq!(guest.rx().read(&mut buf, false), channel::Read::Data(2));
        assert_eq!(guest.tx().write(b"yo"), channel::Write::Written(2));
        drop(guest);
        let mut answer = Vec::new();
        host.read_to_end(&mut answer).expect("read");
        assert_eq!(answer, b"yo");
        assert_eq!(
            network.connection_count(),
            1,
            "the host still holds its end"
        );
        drop(host);
        assert_eq!(network.connection_count(), 0);
        network.close();
        assert!(network.is_closed());
        assert_eq!(network.connect(80).err(), Some(ConnectError::Closed));
        assert!(listener.is_closed());
        assert_eq!(network.listen(any(81), 1).err(), Some(ListenError::Closed));
    }

    #[test]
    fn a_guest_reaches_its_own_listener_and_only_it() {
        let network = Network::new("test", NetworkLimits::default());
        assert!(
            network
                .connect_guest(80, Ipv4Addr::LOCALHOST.into())
                .is_none()
        );
        let listener = network.listen(any(80), 1).expect("listen");
        let mine = network
            .connect_guest(80, Ipv4Addr::LOCALHOST.into())
            .expect("a listener")
            .expect("a connection");
        let theirs = listener.take().expect("queued");
        assert_eq!(mine.peer(), theirs.local());
        assert_eq!(theirs.peer(), mine.local());
        let _queued = network.connect_guest(80, Ipv4Addr::LOCALHOST.into());
        assert_eq!(
            network
                .connect_guest(80, Ipv4Addr::LOCALHOST.into())
                .and_then(Result::err),
            Some(crate::wasi::Errno::Connrefused),
            "a full backlog refuses"
        );
    }
}
