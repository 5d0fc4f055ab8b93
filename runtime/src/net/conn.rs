//! A connection: two [`Channel`]s, one each way, and its two ends. Each end reads from one channel and
//! writes into the other; an end that is dropped (its last clone) closes both of its sides, so the peer
//! reads end-of-file and its writes fail. Every connection holds a [`Slot`] of its network's connection
//! bound until both ends are gone.

use std::net::SocketAddr;
use std::sync::Arc;

use super::Slot;
use super::channel::Channel;

/// One end of a connection, cheap to clone; the end closes when its last clone is dropped.
#[derive(Clone)]
pub(crate) struct Stream {
    ends: Arc<Ends>,
}

struct Ends {
    /// What the peer writes, for this end to read.
    rx: Arc<Channel>,
    /// What this end writes, for the peer to read.
    tx: Arc<Channel>,
    local: SocketAddr,
    peer: SocketAddr,
    _slot: Arc<Slot>,
}

impl Drop for Ends {
    fn drop(&mut self) {
        self.rx.close_reader();
        self.tx.close_writer(false);
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("local", &self.ends.local)
            .field("peer", &self.ends.peer)
            .finish_non_exhaustive()
    }
}

impl Stream {
    /// A new connection with `capacity` bytes of buffer each way, holding `slot`: the end at `a` (whose
    /// peer is `b`) and the end at `b`.
    pub(crate) fn pair(capacity: usize, a: SocketAddr, b: SocketAddr, slot: Slot) -> (Self, Self) {
        let slot = Arc::new(slot);
        let a_to_b = Arc::new(Channel::new(capacity));
        let b_to_a = Arc::new(Channel::new(capacity));
        (
            Self::from_channels(b_to_a.clone(), a_to_b.clone(), a, b, slot.clone()),
            Self::from_channels(a_to_b, b_to_a, b, a, slot),
        )
    }

    /// An end over existing channels (the outbound bridge keeps the other sides itself).
    pub(crate) fn from_channels(
        rx: Arc<Channel>,
        tx: Arc<Channel>,
        local: SocketAddr,
        peer: SocketAddr,
        slot: Arc<Slot>,
    ) -> Self {
        Self {
            ends: Arc::new(Ends {
                rx,
                tx,
                local,
                peer,
                _slot: slot,
            }),
        }
    }

    /// The channel this end reads.
    pub(crate) fn rx(&self) -> &Channel {
        &self.ends.rx
    }

    /// The channel this end writes.
    pub(crate) fn tx(&self) -> &Channel {
        &self.ends.tx
    }

    /// This end's address.
    pub(crate) fn local(&self) -> SocketAddr {
        self.ends.local
    }

    /// The peer's address.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.ends.peer
    }
}
