//! The saved state of a sandbox's network and of its guests' sockets, as plain serde data.
//!
//! A pause keeps what a service needs to be reachable again after the resume: the policy for outbound
//! connections and every port a guest listens on ([`NetworkState`]), and for each socket fd what it is
//! ([`SocketSaved`]): a listening fd names its listener by id, as a pipe end names its pipe. Connections
//! are not kept — their peers are gone after a pause — so a connected socket is saved as what it was
//! connected between and comes back closed: reads see end-of-file, writes `EPIPE`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::EgressPolicy;

/// A sandbox's network as saved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkState {
    /// The policy for outbound connections.
    pub egress: EgressPolicy,
    /// Every listening port some saved fd holds, by id.
    pub listeners: Vec<ListenerSaved>,
}

/// A listening port as saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerSaved {
    /// What the fds listening on it call it, within this blob.
    pub id: u64,
    /// The address the guest bound, port included.
    pub addr: SocketAddr,
    /// Its backlog.
    pub backlog: u32,
}

impl ListenerSaved {
    /// The address the guest bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A socket's address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SocketFamily {
    /// IPv4.
    Inet4,
    /// IPv6.
    Inet6,
}

/// A socket fd as saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketSaved {
    /// Its address family.
    pub family: SocketFamily,
    /// Where it was in its life.
    pub state: SocketStateSaved,
    /// `SO_REUSEADDR`.
    pub reuse_addr: bool,
    /// `SO_KEEPALIVE` as the guest set it.
    pub keepalive: bool,
    /// `SO_RCVTIMEO` in nanoseconds (`None`: reads wait as long as it takes).
    pub recv_timeout_ns: Option<u64>,
    /// `SO_SNDTIMEO` in nanoseconds.
    pub send_timeout_ns: Option<u64>,
}

/// Where a socket was in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SocketStateSaved {
    /// Opened, perhaps bound, neither listening nor connected.
    Open {
        /// The address it was bound to.
        bound: Option<SocketAddr>,
    },
    /// Listening on the saved listener with this id.
    Listening {
        /// The listener's [`ListenerSaved::id`].
        listener: u64,
    },
    /// Connected (or closed after a connection); restored closed.
    Closed {
        /// Its own address.
        local: SocketAddr,
        /// Its peer's.
        peer: SocketAddr,
    },
}
