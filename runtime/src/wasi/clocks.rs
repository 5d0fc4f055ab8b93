//! The sandbox's clocks: a virtual monotonic clock that continues from its saved value after a restore (so it
//! never goes backwards and does not count the time a sandbox spent paused), and the host's realtime clock.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Resolution reported for both clocks, in nanoseconds (`clock_gettime` on Linux resolves to 1 ns).
pub const RESOLUTION_NS: u64 = 1;

/// A monotonic clock that starts at a given value and advances with the host's monotonic time.
#[derive(Clone, Debug)]
pub struct VirtualClock {
    base_ns: u64,
    started: Instant,
    last_ns: u64,
}

impl VirtualClock {
    /// A clock that reads `base_ns` now and advances from there.
    pub fn starting_at(base_ns: u64) -> Self {
        Self {
            base_ns,
            started: Instant::now(),
            last_ns: base_ns,
        }
    }

    /// Current value in nanoseconds; never smaller than a value returned before.
    pub fn now(&mut self) -> u64 {
        let elapsed = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let now = self.base_ns.saturating_add(elapsed).max(self.last_ns);
        self.last_ns = now;
        now
    }
}

/// The host's wall clock in nanoseconds since the Unix epoch (0 for a host clock set before 1970).
pub fn realtime_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continues_from_its_base_and_never_goes_back() {
        let mut c = VirtualClock::starting_at(5_000_000_000);
        let a = c.now();
        let b = c.now();
        assert!(a >= 5_000_000_000 && b >= a);
        // A restored clock continues from the saved value, not from the host's boot time.
        let mut restored = VirtualClock::starting_at(b);
        assert!(restored.now() >= b);
        assert!(restored.now() < b + 60_000_000_000);
    }
}
