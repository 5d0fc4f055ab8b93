//! What a sandbox uses right now, readable from any thread without the sandbox's lock (for metrics): the
//! linear memory of all its processes, commands included, and the CPU time its guest code has run.
//!
//! Memory is counted by every store's resource limiter ([`Limiter`]): a memory that grows adds what it
//! grew by, a store that is dropped gives back everything it had. So the figure is the sum of the
//! current sizes of every linear memory of every live instance of the sandbox, reactors and running
//! commands alike.
//!
//! CPU time is the thread CPU time (`pthread_getcpuclockid`) of the threads while they run the sandbox's
//! guest code: a [`CpuGuard`] is held around each call into a guest and each command's run. A slice that
//! is still running is read live from its thread's clock, so a long-running command shows up in every
//! sample, not only when it ends. Time a guest spends blocked in the host (a sleep, a read of its stdin)
//! costs its thread no CPU time and so does not count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::{ResourceLimiter, StoreLimits};

/// A sandbox's current usage, shared by the sandbox and every store of it.
#[derive(Debug, Default)]
pub struct SandboxUsage {
    /// Bytes of linear memory of every live instance.
    memory: AtomicU64,
    /// CPU nanoseconds of guest-code slices that have ended.
    cpu_done_ns: AtomicU64,
    /// The slices running now: which thread, and its CPU clock when the slice began.
    running: Mutex<Vec<Slice>>,
    /// Tells slices apart.
    next_slice: AtomicU64,
}

/// A slice of guest code running on some thread.
#[derive(Debug, Clone, Copy)]
struct Slice {
    id: u64,
    clock: libc::clockid_t,
    started_ns: u64,
}

impl SandboxUsage {
    /// A fresh account: no memory, no CPU time.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Bytes of linear memory held by the sandbox's live instances (reactor processes and running
    /// commands).
    pub fn memory_bytes(&self) -> u64 {
        self.memory.load(Ordering::SeqCst)
    }

    /// CPU time the sandbox's guest code has used so far, the slices still running included.
    pub fn cpu_time(&self) -> Duration {
        let running = self.lock();
        let live: u64 = running
            .iter()
            .filter_map(|slice| Some(clock_ns(slice.clock)?.saturating_sub(slice.started_ns)))
            .sum();
        Duration::from_nanos(self.cpu_done_ns.load(Ordering::SeqCst).saturating_add(live))
    }

    /// Counts the calling thread's CPU time against the sandbox until the guard is dropped. Without a
    /// per-thread CPU clock (not Linux, or the call failed) nothing is counted.
    pub(crate) fn running(self: &Arc<Self>) -> CpuGuard {
        let slice = thread_clock().and_then(|clock| {
            Some(Slice {
                id: self.next_slice.fetch_add(1, Ordering::Relaxed),
                clock,
                started_ns: clock_ns(clock)?,
            })
        });
        if let Some(slice) = slice {
            self.lock().push(slice);
        }
        CpuGuard {
            usage: self.clone(),
            slice: slice.map(|s| s.id),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Slice>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add_memory(&self, bytes: u64) {
        self.memory.fetch_add(bytes, Ordering::SeqCst);
    }

    fn release_memory(&self, bytes: u64) {
        // Saturating: an account must never wrap, whatever order stores are dropped in.
        let _ = self
            .memory
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |m| {
                Some(m.saturating_sub(bytes))
            });
    }
}

/// Counts a thread's CPU time against a sandbox while it lives (see [`SandboxUsage::running`]).
pub(crate) struct CpuGuard {
    usage: Arc<SandboxUsage>,
    slice: Option<u64>,
}

impl Drop for CpuGuard {
    fn drop(&mut self) {
        let Some(id) = self.slice else { return };
        // Removed under the lock, on the thread the clock belongs to: a reader never sees the clock of a
        // thread that has exited.
        let mut running = self.usage.lock();
        if let Some(index) = running.iter().position(|s| s.id == id) {
            let slice = running.swap_remove(index);
            let used = clock_ns(slice.clock)
                .unwrap_or(slice.started_ns)
                .saturating_sub(slice.started_ns);
            self.usage.cpu_done_ns.fetch_add(used, Ordering::SeqCst);
        }
    }
}

/// The resource limiter of a process's store: wasmtime's [`StoreLimits`], plus the account of the
/// memory the store holds, kept in the sandbox's [`SandboxUsage`].
pub(crate) struct Limiter {
    limits: StoreLimits,
    usage: Arc<SandboxUsage>,
    /// Bytes of linear memory this store holds.
    held: u64,
    /// What the growth being attempted would add, taken back if it fails.
    pending: u64,
}

impl Limiter {
    pub(crate) fn new(limits: StoreLimits, usage: Arc<SandboxUsage>) -> Self {
        Self {
            limits,
            usage,
            held: 0,
            pending: 0,
        }
    }

    /// The account this store's usage is counted in.
    pub(crate) fn usage(&self) -> &Arc<SandboxUsage> {
        &self.usage
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            let grown = desired.saturating_sub(current) as u64;
            self.held = self.held.saturating_add(grown);
            self.pending = grown;
            self.usage.add_memory(grown);
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        let failed = std::mem::take(&mut self.pending);
        self.held = self.held.saturating_sub(failed);
        self.usage.release_memory(failed);
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl Drop for Limiter {
    fn drop(&mut self) {
        self.usage.release_memory(self.held);
    }
}

/// The calling thread's CPU-time clock.
fn thread_clock() -> Option<libc::clockid_t> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `pthread_self` is always valid for the calling thread, and `clock` is a valid place for
    // the clock id to be written to.
    let status = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
    (status == 0).then_some(clock)
}

/// The current value of `clock` in nanoseconds.
fn clock_ns(clock: libc::clockid_t) -> Option<u64> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write to; an invalid clock id makes the call fail with
    // EINVAL, never write elsewhere.
    let status = unsafe { libc::clock_gettime(clock, &mut now) };
    if status != 0 {
        return None;
    }
    let seconds = u64::try_from(now.tv_sec).ok()?;
    let nanos = u64::try_from(now.tv_nsec).ok()?;
    Some(seconds.saturating_mul(1_000_000_000).saturating_add(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_slice_counts_cpu_time_and_an_idle_one_barely() {
        let usage = SandboxUsage::new();
        {
            let _busy = usage.running();
            // Spins until the live reading (the slice is still running) shows 30 ms of CPU time: on a
            // loaded machine that takes longer than 30 ms of wall time, never less.
            let start = std::time::Instant::now();
            let mut x = 0u64;
            while usage.cpu_time() < Duration::from_millis(30) {
                x = std::hint::black_box(x.wrapping_add(1));
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "no CPU time counted"
                );
            }
            assert!(start.elapsed() >= Duration::from_millis(30));
        }
        let busy = usage.cpu_time();
        assert!(busy >= Duration::from_millis(30), "{busy:?}");
        {
            let _idle = usage.running();
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(usage.cpu_time() - busy < Duration::from_millis(20));
    }

    #[test]
    fn memory_is_given_back_when_a_store_goes() -> wasmtime::Result<()> {
        let usage = SandboxUsage::new();
        let mut limiter = Limiter::new(StoreLimits::default(), usage.clone());
        assert!(limiter.memory_growing(0, 65536, None)?);
        assert!(limiter.memory_growing(65536, 3 * 65536, None)?);
        assert_eq!(usage.memory_bytes(), 3 * 65536);
        drop(limiter);
        assert_eq!(usage.memory_bytes(), 0);
        Ok(())
    }
}
