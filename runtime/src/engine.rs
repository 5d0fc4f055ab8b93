//! The process-wide wasmtime [`Engine`], its epoch ticker, and the compiled-module cache.
//!
//! One [`StasisEngine`] is shared by every sandbox: a wasmtime engine configured for epoch interruption, a
//! background thread that advances the epoch every [`EngineConfig::epoch_tick`] so that CPU deadlines
//! (`Store::set_epoch_deadline`) fire, and a two-level cache of compiled modules so a module is compiled at
//! most once per machine and loaded at most once per process:
//!
//! - **in memory**: sha256 of the wasm → [`Module`]; a per-key lock makes concurrent loads of the same module
//!   wait for one compilation instead of racing.
//! - **on disk** (optional): `<cache_dir>/<sha256 of wasm>-<engine config hash>.cwasm`. The config hash is a
//!   sha256 of wasmtime's [`Engine::precompile_compatibility_hash`], so engines with different settings
//!   never read each other's artifacts. Each file is `MAGIC | sha256(payload) | payload`, where the payload
//!   is [`Module::serialize`]'s output; the checksum is verified before the payload is handed to wasmtime.
//!   Files are written atomically (temporary file in the same directory, `sync_all`, rename), so a reader sees
//!   either a whole artifact or none. The disk cache is an optimization: a failure to write it is logged and
//!   the freshly compiled module is still returned.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::{Config, Engine, Module, OptLevel};

/// First bytes of every on-disk cache file; bump the digit when the framing changes.
const CACHE_MAGIC: &[u8; 8] = b"STASCW01";
/// Length of the header preceding the serialized module: magic and sha256 of the payload.
const CACHE_HEADER_LEN: usize = CACHE_MAGIC.len() + 32;
/// Extension of cache files.
const CACHE_EXT: &str = "cwasm";

/// How to build a [`StasisEngine`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Directory of the on-disk compiled-module cache; `None` disables it. Created if missing.
    pub cache_dir: Option<PathBuf>,
    /// Period of the epoch ticker, i.e. the granularity of CPU deadlines. Must not be zero.
    pub epoch_tick: Duration,
    /// Cranelift optimization level for guest code.
    pub opt_level: OptLevel,
    /// Whether to compile a module's functions on several threads.
    pub parallel_compilation: bool,
    /// Most native stack a guest's wasm call stack may use. 1 MiB, twice wasmtime's default: functions the
    /// unwind stage rewrote keep more values alive across calls, so their frames are larger, and the
    /// interpreters' recursion limits are set for this. The threads that run guests (2 MiB by default in
    /// Rust) must have more than this.
    pub max_wasm_stack: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            epoch_tick: Duration::from_millis(10),
            opt_level: OptLevel::Speed,
            parallel_compilation: true,
            max_wasm_stack: 1 << 20,
        }
    }
}

/// Why a [`StasisEngine`] could not be created.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// [`EngineConfig::epoch_tick`] was zero, which would make the ticker spin.
    #[error("the epoch tick must be longer than zero")]
    ZeroEpochTick,
    /// wasmtime refused the configuration.
    #[error("wasmtime rejected the engine configuration")]
    Wasmtime(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The cache directory could not be created.
    #[error("cannot create the module cache directory {path}")]
    CacheDir {
        /// The directory.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// The epoch ticker thread could not be started.
    #[error("cannot start the epoch ticker thread")]
    Ticker(#[source] std::io::Error),
}

/// Why a module could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// wasmtime could not compile the module (invalid wasm, unsupported feature, resource limits).
    #[error("compiling the module failed")]
    Compile(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Where a [`LoadedModule`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleSource {
    /// Already loaded by this engine in this process.
    Memory,
    /// Deserialized from the on-disk cache.
    Disk,
    /// Compiled now.
    Compiled,
}

/// A compiled module ready to instantiate.
#[derive(Clone)]
pub struct LoadedModule {
    /// The compiled module.
    pub module: Module,
    /// sha256 of the wasm bytes it was compiled from.
    pub sha256: [u8; 32],
    /// Whether no compilation happened (served from memory or disk).
    pub from_cache: bool,
    /// Which cache level served it, if any.
    pub source: ModuleSource,
}

impl fmt::Debug for LoadedModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedModule")
            .field("sha256", &hex::encode(self.sha256))
            .field("from_cache", &self.from_cache)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The shared engine: cheap to clone, the ticker thread stops when the last clone is dropped.
#[derive(Clone)]
pub struct StasisEngine {
    inner: Arc<Inner>,
}

impl fmt::Debug for StasisEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StasisEngine")
            .field("epoch_tick", &self.inner.epoch_tick)
            .field("cache_dir", &self.inner.cache_dir)
            .field("config_hash", &self.inner.config_hash)
            .finish_non_exhaustive()
    }
}

/// A module once loaded; `None` until the first loader of that hash finishes.
type ModuleSlot = Arc<Mutex<Option<Module>>>;

struct Inner {
    engine: Engine,
    epoch_tick: Duration,
    cache_dir: Option<PathBuf>,
    config_hash: String,
    /// One slot per module hash; the slot's own lock serializes compilation of that module only.
    modules: Mutex<HashMap<[u8; 32], ModuleSlot>>,
    /// Dropping the sender wakes the ticker and tells it to exit.
    stop: Option<mpsc::Sender<()>>,
    ticker: Option<JoinHandle<()>>,
    ticker_running: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(handle) = self.ticker.take() {
            // The ticker only sleeps and increments an atomic, so it exits within one tick; joining makes
            // "no thread outlives the engine" a guarantee rather than a hope.
            if handle.join().is_err() {
                tracing::error!("the epoch ticker thread panicked");
            }
        }
    }
}

/// Observes whether an engine's epoch ticker thread is alive; outlives the engine, for monitoring and tests.
#[derive(Debug, Clone)]
pub struct TickerStatus(Arc<AtomicBool>);

impl TickerStatus {
    /// Whether the ticker thread is still running.
    pub fn is_running(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Clears the running flag when the ticker thread exits, however it exits.
struct RunningGuard(Arc<AtomicBool>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Feeds `Hash` output into sha256, so the configuration hash is stable across processes and Rust versions
/// (unlike `DefaultHasher`, whose algorithm is unspecified).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl StasisEngine {
    /// Builds the engine, creates the cache directory and starts the epoch ticker.
    pub fn new(config: EngineConfig) -> Result<Self, EngineError> {
        if config.epoch_tick.is_zero() {
            return Err(EngineError::ZeroEpochTick);
        }
        let mut wasmtime_config = Config::new();
        wasmtime_config
            .epoch_interruption(true)
            .cranelift_opt_level(config.opt_level)
            .parallel_compilation(config.parallel_compilation)
            .max_wasm_stack(config.max_wasm_stack);
        let engine = Engine::new(&wasmtime_config).map_err(|e| EngineError::Wasmtime(e.into()))?;

        if let Some(dir) = &config.cache_dir {
            std::fs::create_dir_all(dir).map_err(|source| EngineError::CacheDir {
                path: dir.clone(),
                source,
            })?;
        }

        let mut hasher = Sha256Hasher(Sha256::new());
        CACHE_MAGIC.hash(&mut hasher);
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let config_hash = hex::encode(hasher.0.finalize());

        let (stop, stopped) = mpsc::channel::<()>();
        let ticker_running = Arc::new(AtomicBool::new(true));
        let guard = RunningGuard(ticker_running.clone());
        let ticker_engine = engine.clone();
        let tick = config.epoch_tick;
        let ticker = std::thread::Builder::new()
            .name("stasis-epoch".into())
            .spawn(move || {
                let _guard = guard;
                // `recv_timeout` doubles as the sleep: it returns `Disconnected` as soon as the engine is
                // dropped, so shutdown does not wait for a full tick.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    ticker_engine.increment_epoch();
                }
            })
            .map_err(|e| {
                ticker_running.store(false, Ordering::Release);
                EngineError::Ticker(e)
            })?;

        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                epoch_tick: tick,
                cache_dir: config.cache_dir,
                config_hash,
                modules: Mutex::new(HashMap::new()),
                stop: Some(stop),
                ticker: Some(ticker),
                ticker_running,
            }),
        })
    }

    /// The wasmtime engine, for creating stores and linkers.
    ///
    /// Epoch interruption is on, so every store must call `set_epoch_deadline` (see [`Self::ticks_for`])
    /// before running guest code: a new store's deadline is already past and its first call would trap.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The period of the epoch ticker.
    pub fn epoch_tick(&self) -> Duration {
        self.inner.epoch_tick
    }

    /// The number of epoch ticks covering `d`, rounded up and at least one, for `Store::set_epoch_deadline`.
    pub fn ticks_for(&self, d: Duration) -> u64 {
        let tick = self.inner.epoch_tick.as_nanos().max(1);
        let ticks = d.as_nanos().div_ceil(tick).max(1);
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }

    /// Hex sha256 identifying this engine's compilation settings; part of every cache key.
    pub fn config_hash(&self) -> &str {
        &self.inner.config_hash
    }

    /// Observes the epoch ticker thread.
    pub fn ticker(&self) -> TickerStatus {
        TickerStatus(self.inner.ticker_running.clone())
    }

    /// The on-disk cache file for a module with this sha256, if the disk cache is enabled.
    pub fn cache_path(&self, sha256: &[u8; 32]) -> Option<PathBuf> {
        let dir = self.inner.cache_dir.as_ref()?;
        Some(dir.join(format!(
            "{}-{}.{CACHE_EXT}",
            hex::encode(sha256),
            self.inner.config_hash
        )))
    }

    /// Returns the compiled module for `wasm`, from memory, from disk, or by compiling it (and then filling
    /// both caches). Concurrent calls for the same bytes compile once.
    pub fn load_module(&self, wasm: &[u8]) -> Result<LoadedModule, CompileError> {
        let sha256: [u8; 32] = Sha256::digest(wasm).into();
        let slot = {
            let mut modules = self
                .inner
                .modules
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            modules.entry(sha256).or_default().clone()
        };
        // A poisoned slot only means a previous loader panicked; its `None` is still accurate.
        let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(module) = slot.as_ref() {
            return Ok(LoadedModule {
                module: module.clone(),
                sha256,
                from_cache: true,
                source: ModuleSource::Memory,
            });
        }
        let path = self.cache_path(&sha256);
        if let Some(module) = path.as_deref().and_then(|p| self.read_cached(p)) {
            *slot = Some(module.clone());
            return Ok(LoadedModule {
                module,
                sha256,
                from_cache: true,
                source: ModuleSource::Disk,
            });
        }
        let module =
            Module::new(&self.inner.engine, wasm).map_err(|e| CompileError::Compile(e.into()))?;
        if let Some(path) = &path
            && let Err(e) = write_cached(&module, path)
        {
            tracing::warn!(path = %path.display(), error = %e, "could not write the compiled-module cache");
        }
        *slot = Some(module.clone());
        Ok(LoadedModule {
            module,
            sha256,
            from_cache: false,
            source: ModuleSource::Compiled,
        })
    }

    /// The compiled module whose (instrumented) wasm has this sha256, if it is loaded or in the disk cache;
    /// never compiles.
    pub fn load_cached(&self, sha256: &[u8; 32]) -> Option<LoadedModule> {
        let slot = {
            let mut modules = self
                .inner
                .modules
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            modules.entry(*sha256).or_default().clone()
        };
        let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(module) = slot.as_ref() {
            return Some(LoadedModule {
                module: module.clone(),
                sha256: *sha256,
                from_cache: true,
                source: ModuleSource::Memory,
            });
        }
        let module = self.read_cached(&self.cache_path(sha256)?)?;
        *slot = Some(module.clone());
        Some(LoadedModule {
            module,
            sha256: *sha256,
            from_cache: true,
            source: ModuleSource::Disk,
        })
    }

    /// Reads a named artifact of the disk cache (written by [`Self::write_artifact`]), checksum verified;
    /// `None` when there is no cache, no such file, or a damaged one.
    pub fn read_artifact(&self, name: &str) -> Option<Vec<u8>> {
        let path = self.inner.cache_dir.as_ref()?.join(name);
        let bytes = std::fs::read(&path).ok()?;
        match verified_payload(&bytes) {
            Some(payload) => Some(payload.to_vec()),
            None => {
                tracing::warn!(path = %path.display(), "cache artifact is corrupt; ignoring it");
                None
            }
        }
    }

    /// Stores a named artifact in the disk cache, atomically and checksummed (best effort: a cache that
    /// cannot be written is logged and ignored).
    pub fn write_artifact(&self, name: &str, payload: &[u8]) {
        let Some(dir) = self.inner.cache_dir.as_ref() else {
            return;
        };
        let path = dir.join(name);
        if let Err(e) = write_framed(payload, &path) {
            tracing::warn!(path = %path.display(), error = %e, "could not write a cache artifact");
        }
    }

    /// Forgets the in-memory copy of a module (e.g. when its template is deleted), so its code can be freed
    /// once no instance uses it. The on-disk artifact stays. Returns whether the module was loaded.
    pub fn evict(&self, sha256: &[u8; 32]) -> bool {
        let mut modules = self
            .inner
            .modules
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        modules.remove(sha256).is_some()
    }

    /// Reads and deserializes a cache file; `None` (after logging why) when it is missing, truncated,
    /// corrupted or incompatible, so the caller recompiles and overwrites it.
    fn read_cached(&self, path: &Path) -> Option<Module> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the compiled-module cache");
                return None;
            }
        };
        let Some(payload) = verified_payload(&bytes) else {
            tracing::warn!(path = %path.display(), "compiled-module cache file is corrupt; recompiling");
            return None;
        };
        // SAFETY: `Module::deserialize` trusts its input to be machine code wasmtime produced. The input is
        // a file in our own cache directory, written only by `write_cached` from `Module::serialize`, and
        // its sha256 was just verified against the header written with it, so it is exactly those bytes
        // and not a truncated or bit-flipped copy. wasmtime itself checks that the artifact was produced by
        // the same wasmtime version and a compatible configuration, and errors otherwise. Anyone able to
        // write arbitrary files into the cache directory can already run code as this process.
        match unsafe { Module::deserialize(&self.inner.engine, payload) } {
            Ok(module) => Some(module),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "compiled-module cache file is incompatible; recompiling");
                None
            }
        }
    }
}

/// The serialized module inside a cache file, if the framing and checksum are intact.
fn verified_payload(bytes: &[u8]) -> Option<&[u8]> {
    let (header, payload) = bytes.split_at_checked(CACHE_HEADER_LEN)?;
    let (magic, checksum) = header.split_at(CACHE_MAGIC.len());
    (magic == CACHE_MAGIC && Sha256::digest(payload).as_slice() == checksum).then_some(payload)
}

/// Writes a module to the cache atomically: temporary file in the same directory, fsync, rename.
fn write_cached(module: &Module, path: &Path) -> std::io::Result<()> {
    let payload = module
        .serialize()
        .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    write_framed(&payload, path)
}

/// Writes `payload` framed (magic, sha256) to `path` atomically.
fn write_framed(payload: &[u8], path: &Path) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("cache path has no parent directory"))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .suffix(".cwasm")
        .tempfile_in(dir)?;
    tmp.write_all(CACHE_MAGIC)?;
    tmp.write_all(&Sha256::digest(payload))?;
    tmp.write_all(payload)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // Make the rename itself durable; failure here only risks a recompile after a crash.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
