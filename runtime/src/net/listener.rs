//! A port a guest listens on: a routing entry of its sandbox's network, not a host port. Connections to it
//! (from the host through [`super::Network::connect`], or from the sandbox's own guests) wait in a bounded
//! backlog until the guest accepts them.
//!
//! The guest's listening fd holds a [`Bound`]: when its last holder goes (the fd is closed, its process
//! ends, the sandbox is paused), the port leaves the network and the connections still waiting in the
//! backlog are dropped, so their peers see the connection end.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::Network;
use super::conn::Stream;

/// Ids of listeners, unique within the host process: what a saved fd names its listener by (a restored
/// listener gets a new one).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A listening port and its backlog.
pub(crate) struct Listener {
    id: u64,
    port: u16,
    /// The address the guest bound (its port is `port`).
    addr: SocketAddr,
    backlog: usize,
    state: Mutex<Backlog>,
    changed: Condvar,
}

struct Backlog {
    waiting: VecDeque<Stream>,
    closed: bool,
}

/// Why a connection could not be queued on a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueError {
    /// The backlog holds as many connections as it may.
    Full,
    /// The listener was closed.
    Closed,
}

impl Listener {
    pub(crate) fn new(addr: SocketAddr, backlog: usize) -> Self {
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            port: addr.port(),
            addr,
            backlog: backlog.max(1),
            state: Mutex::new(Backlog {
                waiting: VecDeque::new(),
                closed: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Backlog> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The listener's id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The address the guest bound.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address a connection to the listener has at its accepting end: the bound address, or
    /// loopback when the guest bound the unspecified address.
    pub(crate) fn addr_for_peer(&self) -> SocketAddr {
        match self.addr.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, self.port))
            }
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, self.port))
            }
            _ => self.addr,
        }
    }

    /// The most connections that may wait to be accepted.
    pub(crate) fn backlog(&self) -> usize {
        self.backlog
    }

    /// Queues the accepting end of a connection.
    pub(crate) fn queue(&self, stream: Stream) -> Result<(), QueueError> {
        let mut state = self.lock();
        if state.closed {
            return Err(QueueError::Closed);
        }
        if state.waiting.len() >= self.backlog {
            return Err(QueueError::Full);
        }
        state.waiting.push_back(stream);
        self.changed.notify_all();
        Ok(())
    }

    /// Takes the oldest waiting connection, if there is one.
    pub(crate) fn take(&self) -> Option<Stream> {
        self.lock().waiting.pop_front()
    }

    /// How many connections wait to be accepted.
    pub(crate) fn pending(&self) -> usize {
        self.lock().waiting.len()
    }

    /// Whether the listener was closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Waits until a connection waits or `until` comes: whether one does.
    pub(crate) fn wait(&self, until: Instant) -> bool {
        let mut state = self.lock();
        loop {
            if !state.waiting.is_empty() || state.closed {
                return !state.waiting.is_empty();
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

    /// Closes the listener: the waiting connections are dropped (their peers see them end) and no more
    /// are queued.
    pub(crate) fn close(&self) {
        let dropped = {
            let mut state = self.lock();
            state.closed = true;
            std::mem::take(&mut state.waiting)
        };
        self.changed.notify_all();
        drop(dropped);
    }
}

/// A guest's hold on a listening port: the port stays in the network while a holder lives.
pub(crate) struct Bound {
    listener: Arc<Listener>,
    network: Network,
}

impl Bound {
    pub(crate) fn new(listener: Arc<Listener>, network: Network) -> Self {
        Self { listener, network }
    }

    /// The listener.
    pub(crate) fn listener(&self) -> &Arc<Listener> {
        &self.listener
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        self.network.unlisten(&self.listener);
        self.listener.close();
    }
}
