//! Usage samples of every running sandbox, taken at an interval over its life (E2B's sandbox metrics):
//! the CPU its guest code used since the previous sample (of its one virtual CPU), the linear memory of
//! its processes, and the bytes of its directory's files. Kept in memory, the newest [`MAX_SAMPLES`] per
//! sandbox; a paused sandbox keeps its history (and takes no samples) until it is killed.
//!
//! CPU and memory come from the sandbox's usage account ([`stasis::SandboxUsage`]); disk from a walk of
//! its directory, bounded to [`MAX_SCAN_ENTRIES`] entries, so files written through the file API count as
//! much as files the guest wrote.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use stasis::SandboxUsage;
use stasis::lifecycle::{ListQuery, SandboxState};

use crate::state::AppState;

/// Samples kept per sandbox: an hour at the default interval.
pub const MAX_SAMPLES: usize = 720;
/// Sandboxes whose samples are kept: every running one (at most 256 by default) and the most recently
/// sampled paused ones; past it the history of the paused sandbox sampled longest ago is dropped, so
/// thousands of paused sandboxes cost no memory here.
pub const MAX_SERIES: usize = 1024;
/// The default interval between samples.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Most directory entries one disk sample walks; a larger tree reports what it counted.
pub const MAX_SCAN_ENTRIES: usize = 200_000;

/// One sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When it was taken (ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// CPU used since the previous sample, in percent of the sandbox's one CPU.
    pub cpu_used_pct: f64,
    /// Bytes of linear memory of its processes.
    pub mem_used: u64,
    /// Bytes of its files.
    pub disk_used: u64,
}

struct Series {
    samples: VecDeque<Sample>,
    /// The account, wall time and CPU time of the previous sample: a resume brings a new account.
    last: Option<(Arc<SandboxUsage>, Instant, Duration)>,
}

/// Every sandbox's samples.
pub struct Samples {
    series: Mutex<HashMap<String, Series>>,
    interval_ms: AtomicU64,
}

impl Default for Samples {
    fn default() -> Self {
        Self {
            series: Mutex::new(HashMap::new()),
            interval_ms: AtomicU64::new(DEFAULT_INTERVAL.as_millis() as u64),
        }
    }
}

impl Samples {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Series>> {
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The interval between samples.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.load(Ordering::Relaxed))
    }

    /// Changes the interval between samples (at least 10 ms), from the next one on.
    pub fn set_interval(&self, interval: Duration) {
        let ms = u64::try_from(interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(10);
        self.interval_ms.store(ms, Ordering::Relaxed);
    }

    /// Sandbox `id`'s samples, oldest first.
    pub fn series(&self, id: &str) -> Vec<Sample> {
        self.lock()
            .get(id)
            .map(|s| s.samples.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Sandbox `id`'s newest sample.
    pub fn latest(&self, id: &str) -> Option<Sample> {
        self.lock().get(id).and_then(|s| s.samples.back().copied())
    }

    /// Records a sample of `id` from its account and its disk usage.
    fn record(&self, id: &str, usage: Arc<SandboxUsage>, disk_used: u64) {
        let now = Instant::now();
        let cpu = usage.cpu_time();
        let mut all = self.lock();
        let series = all.entry(id.to_owned()).or_insert_with(|| Series {
            samples: VecDeque::new(),
            last: None,
        });
        let cpu_used_pct = match &series.last {
            Some((account, at, before)) if Arc::ptr_eq(account, &usage) => {
                let wall = now.duration_since(*at).as_secs_f64();
                if wall > 0.0 {
                    (cpu.saturating_sub(*before).as_secs_f64() / wall * 100.0).clamp(0.0, 100.0)
                } else {
                    0.0
                }
            }
            // The first sample of an account: its CPU time over one interval.
            _ => {
                let wall = self.interval().as_secs_f64();
                (cpu.as_secs_f64() / wall * 100.0).clamp(0.0, 100.0)
            }
        };
        series.last = Some((usage.clone(), now, cpu));
        if series.samples.len() == MAX_SAMPLES {
            series.samples.pop_front();
        }
        series.samples.push_back(Sample {
            timestamp_ms: stasis::lifecycle::record::now_ms(),
            cpu_used_pct,
            mem_used: usage.memory_bytes(),
            disk_used,
        });
    }

    /// Forgets the samples of sandboxes that `gone` says are killed, then of the paused ones sampled
    /// longest ago while more than [`MAX_SERIES`] sandboxes have samples.
    fn prune(&self, running: &HashSet<String>, gone: impl Fn(&str) -> bool) {
        let mut all = self.lock();
        all.retain(|id, _| !gone(id));
        while all.len() > MAX_SERIES {
            let oldest = all
                .iter()
                .filter(|(id, _)| !running.contains(*id))
                .min_by_key(|(_, s)| s.samples.back().map_or(0, |s| s.timestamp_ms))
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => all.remove(&id),
                None => break,
            };
        }
    }
}

/// Takes one sample of every running sandbox (a busy one is skipped this time), and forgets killed ones.
pub fn sample_all(state: &AppState) {
    let manager = state.manager();
    let mut running = HashSet::new();
    let mut query = ListQuery {
        states: vec![SandboxState::Running],
        limit: Some(100),
        ..ListQuery::default()
    };
    loop {
        let Ok(page) = manager.list(&query) else {
            break;
        };
        running.extend(page.items.into_iter().map(|info| info.id));
        match page.next_token {
            Some(token) => query.next_token = Some(token),
            None => break,
        }
    }
    for id in &running {
        if let Some(usage) = manager.usage(id) {
            let disk = disk_usage(&manager.fs_dir(id));
            state.samples().record(id, usage, disk);
        }
    }
    state
        .samples()
        .prune(&running, |id| manager.info(id).is_err());
}

/// Bytes of the regular files under `root` (each inode once), not following symlinks, walking at most
/// [`MAX_SCAN_ENTRIES`] entries. A directory that vanishes during the walk counts as empty.
pub fn disk_usage(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    let (mut bytes, mut entries) = (0u64, 0usize);
    while let Some(dir) = stack.pop() {
        let Ok(listing) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in listing.flatten() {
            entries += 1;
            if entries > MAX_SCAN_ENTRIES {
                return bytes;
            }
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() && seen.insert((meta.dev(), meta.ino())) {
                bytes = bytes.saturating_add(meta.len());
            }
        }
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn killed_sandboxes_are_forgotten_and_old_paused_histories_bounded() {
        let samples = Samples::default();
        let usage = SandboxUsage::new();
        for i in 0..MAX_SERIES + 10 {
            samples.record(&format!("s{i}"), usage.clone(), i as u64);
        }
        // Sampled in this order, one millisecond apart.
        for (id, series) in samples.lock().iter_mut() {
            let i: u64 = id[1..].parse().expect("index");
            if let Some(last) = series.samples.back_mut() {
                last.timestamp_ms = 1_000 + i;
            }
        }
        let running: HashSet<String> = ["s0".to_owned()].into();
        samples.prune(&running, |id| id == "s5");
        let all = samples.lock();
        assert_eq!(all.len(), MAX_SERIES);
        assert!(
            all.contains_key("s0"),
            "a running sandbox keeps its samples"
        );
        assert!(!all.contains_key("s5"), "a killed one is forgotten");
        assert!(
            !all.contains_key("s1"),
            "the paused one sampled longest ago goes first"
        );
    }

    #[test]
    fn disk_usage_counts_file_bytes_once_and_survives_a_missing_root() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("d"))?;
        std::fs::write(dir.path().join("d/a"), b"12345")?;
        std::fs::hard_link(dir.path().join("d/a"), dir.path().join("b"))?;
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link"))?;
        assert_eq!(disk_usage(dir.path()), 5);
        assert_eq!(disk_usage(&dir.path().join("missing")), 0);
        Ok(())
    }
}
