//! The sandbox manager: every sandbox's lifecycle — create, pause, connect (resume), timeouts, kill, list,
//! snapshots and forks — with the persistence semantics of the E2B/Novita platforms, on the durable store.
//!
//! Concurrency: each sandbox has its own lock, so operations on different sandboxes run in parallel and
//! operations on one sandbox are serialized. Waiting for a sandbox's lock is bounded by
//! [`ManagerConfig::busy_deadline`]; past it the operation fails with [`LifecycleError::Busy`] and nothing
//! is changed. Reads (`info`, `list`) never wait for a sandbox: they read an index of records updated at
//! every transition (see [`super::catalog`]: a journal makes it durable, so a start reads it rather
//! than every sandbox's files, and a listing, a limit or the reaper visits only what it needs).
//!
//! Durability: a pause writes the blob atomically, *then* records the sandbox as paused; a resume records
//! the sandbox as running, *then* deletes the blob. So after a crash, a record saying "running" with a
//! blob beside it means a pause that completed but was not yet recorded (it is recovered as paused), and
//! "running" without a blob means the sandbox's memory is gone (it is reported as [`SandboxState::Lost`]).
//! Only the few sandboxes the index has as running (or mid-transition) are checked so at a start; a
//! paused one was recorded paused after its blob was written.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RawMutex, lock_api::ArcMutexGuard};

mod persistence;
mod settings;

use super::catalog::{Catalog, IndexReport};
use super::events::{Event, Level};
use super::id::{is_valid, new_id};
use super::mode::PauseMode;
use super::network::NetworkPolicy;
use super::query::{self, ListQuery, QueryError};
use super::record::{LifecyclePolicy, SandboxInfo, SandboxRecord, SandboxState, now_ms, to_ms};
use super::store::{DurableStore, SnapshotInfo, Unreadable, remove_dir_if_present, write_atomic};
use super::volumes::{VolumeError, VolumeMount, Volumes};
use crate::capture::PauseError;
use crate::restore::{ResumeError, ResumeOptions};
use crate::runtime::Runtime;
use crate::sandbox::{CreateError, Sandbox, SandboxOptions};
use crate::snapshot::DecodeError;
use crate::template::{Template, TemplateError};

/// Prefix of snapshot ids, which tells them apart from sandbox ids and template names.
pub const SNAPSHOT_PREFIX: &str = "snap_";
/// Directories every new sandbox starts with.
pub const SKELETON_DIRS: &[&str] = &["tmp", "home/user"];
/// Most sandboxes one fork request may create.
pub const MAX_FORK: usize = 100;

/// How the manager behaves.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Timeout of a sandbox created without one.
    pub default_timeout: Duration,
    /// How long an operation waits for a sandbox busy with another one before failing with `Busy`.
    pub busy_deadline: Duration,
    /// Most sandboxes running at once.
    pub max_running: usize,
    /// Most sandboxes paused at once. A paused sandbox costs disk (its blob) and a few hundred bytes of
    /// the in-memory index, not memory of its own.
    pub max_paused: usize,
    /// Bytes that must stay free on the data directory's file system: a pause (or a blob import) that
    /// finds less refuses with [`LifecycleError::InsufficientDisk`] before it writes anything, rather
    /// than failing half-way; the sandbox keeps running. `0` disables the check. A graceful shutdown's
    /// pauses ignore it: pausing then is the only way not to lose a sandbox.
    pub min_free_disk: u64,
    /// How often timeouts are checked.
    pub reaper_interval: Duration,
    /// Compact the index's journal into a snapshot after this many changes; `None` (the default) does
    /// it once the journal holds as many changes as there are sandboxes, and at least
    /// [`MIN_COMPACTION`](super::MIN_COMPACTION).
    pub compact_journal_after: Option<usize>,
}

/// The default of [`ManagerConfig::max_paused`].
pub const DEFAULT_MAX_PAUSED: usize = 100_000;
/// The default of [`ManagerConfig::min_free_disk`]: 256 MiB.
pub const DEFAULT_MIN_FREE_DISK: u64 = 256 << 20;

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            default_timeout: Duration::from_secs(300),
            busy_deadline: Duration::from_secs(30),
            max_running: 256,
            max_paused: DEFAULT_MAX_PAUSED,
            min_free_disk: DEFAULT_MIN_FREE_DISK,
            reaper_interval: Duration::from_millis(100),
            compact_journal_after: None,
        }
    }
}

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    /// A template name, or a snapshot id (`snap_…`) to start from.
    pub template: String,
    /// How long it runs before its timeout applies; the default timeout when `None`.
    pub timeout: Option<Duration>,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
    /// Environment variables of its processes.
    pub envs: BTreeMap<String, String>,
    /// Its lifecycle policy.
    pub lifecycle: LifecyclePolicy,
    /// Its owner (see [`SandboxRecord::owner`]). A sandbox started from a snapshot gets this owner too,
    /// not the snapshot's.
    pub owner: Option<String>,
    /// Volumes to mount (see [`Volumes`]). A sandbox started from a full snapshot mounts its source's
    /// volumes instead, which these must then equal or leave empty.
    pub mounts: Vec<VolumeMount>,
    /// Its network policy, stored and reported (see [`NetworkPolicy`]).
    pub network: Option<NetworkPolicy>,
}

/// What `connect` did.
#[derive(Debug, Clone, PartialEq)]
pub struct Connected {
    /// The sandbox after the call.
    pub info: SandboxInfo,
    /// Whether it was paused and has been resumed.
    pub resumed: bool,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The sandboxes of this page, oldest first.
    pub items: Vec<SandboxInfo>,
    /// The cursor for the next page; `None` on the last page.
    pub next_token: Option<String>,
}

/// What was found in the store at startup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recovery {
    /// Sandboxes back as paused.
    pub paused: Vec<String>,
    /// Sandboxes that were running when the previous process stopped without pausing them.
    pub lost: Vec<String>,
    /// Snapshots back.
    pub snapshots: usize,
    /// Files that could not be read, with why.
    pub unreadable: Unreadable,
    /// How the index of the records was opened: loaded, or rebuilt from the record files and why.
    pub index: IndexReport,
}

/// What a graceful shutdown did.
#[derive(Debug, Default)]
pub struct Shutdown {
    /// Sandboxes paused by the shutdown.
    pub paused: Vec<String>,
    /// Sandboxes that could not be paused, with why (they will be reported as lost at the next start).
    pub failed: Vec<(String, LifecycleError)>,
}

/// Why a lifecycle operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// No sandbox with this id.
    #[error("sandbox {0} not found")]
    NotFound(String),
    /// No snapshot with this id.
    #[error("snapshot {0} not found")]
    SnapshotNotFound(String),
    /// No template with this name.
    #[error("template {0} not found")]
    UnknownTemplate(String),
    /// Another operation holds the sandbox past the busy deadline.
    #[error("sandbox {0} is busy with another operation; try again")]
    Busy(String),
    /// The sandbox is paused and its policy does not resume it automatically.
    #[error("sandbox {0} is paused; connect to resume it")]
    Paused(String),
    /// The sandbox's memory was lost in a crash; it can only be killed.
    #[error("sandbox {0} was lost when the server stopped without pausing it")]
    Lost(String),
    /// The sandbox is running, and the operation needs it paused (its blob exists only then).
    #[error("sandbox {0} is running; pause it first")]
    Running(String),
    /// An imported blob does not decode: corrupt, truncated, or of another format version.
    #[error("the blob is not valid: {0}")]
    InvalidBlob(DecodeError),
    /// An imported blob was made from a module no registered template has.
    #[error(
        "the blob's template {template} (module sha256 {module_sha256}) is not registered here"
    )]
    UnknownModule {
        /// The template name the blob records.
        template: String,
        /// The hex sha256 of its module.
        module_sha256: String,
    },
    /// A global limit is reached.
    #[error("limit reached: at most {limit} {what}")]
    Limit {
        /// What is limited.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// The data directory's file system has less free space than [`ManagerConfig::min_free_disk`], so
    /// a pause (or an import) was refused before anything was written.
    #[error(
        "not enough free disk space to store a paused sandbox: {available} bytes free, at least {floor} must stay free"
    )]
    InsufficientDisk {
        /// Bytes free.
        available: u64,
        /// The floor.
        floor: u64,
    },
    /// A fork asked for no sandboxes or for too many.
    #[error("a fork creates 1 to {MAX_FORK} sandboxes, not {0}")]
    ForkCount(usize),
    /// The list query is invalid.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// A volume could not be found, mounted or changed.
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// A network policy is invalid.
    #[error(transparent)]
    Network(#[from] super::network::NetworkError),
    /// The request contradicts itself or the sandbox (a filesystem-only pause with auto-resume, mounts
    /// that differ from a full snapshot's).
    #[error("{0}")]
    Conflict(String),
    /// A sandbox could not be cold-started from a blob's files (it stays paused).
    #[error("the sandbox could not be started from its files")]
    ColdStart(#[from] crate::files_only::ColdStartError),
    /// The template could not be loaded.
    #[error("the template could not be loaded")]
    Template(#[from] TemplateError),
    /// The sandbox could not be created.
    #[error("the sandbox could not be created")]
    Create(#[from] CreateError),
    /// The sandbox could not be paused (it keeps running).
    #[error("the sandbox could not be paused")]
    Pause(#[from] PauseError),
    /// The sandbox could not be resumed (it stays paused).
    #[error("the sandbox could not be resumed")]
    Resume(#[from] ResumeError),
    /// The durable store failed.
    #[error("the data directory could not be updated")]
    Store(#[from] std::io::Error),
}

/// What an embedder does with every sandbox a resume brings back — by `connect`, an automatic resume, a
/// create from a snapshot or a fork — called under the sandbox's lock before the resuming call returns:
/// where the processes a pause suspended are continued ([`Sandbox::suspended`]).
pub type ResumeHook = Arc<dyn Fn(&str, &mut Sandbox) + Send + Sync>;

/// The live part of a sandbox, behind its lock.
struct Slot {
    /// The live sandbox while it runs.
    live: Option<Sandbox>,
    /// When an operation last touched it, for the idle timeout.
    last_activity: Instant,
    /// Set by `kill`, so that operations that were waiting for the lock see the sandbox is gone.
    killed: bool,
}

type SlotGuard = ArcMutexGuard<RawMutex, Slot>;

/// The sandbox manager. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

/// Everything a manager shares between its clones and with its reaper thread.
pub(crate) struct Inner {
    runtime: Runtime,
    store: DurableStore,
    config: ManagerConfig,
    templates: RwLock<HashMap<String, Template>>,
    /// Every sandbox's current record, durably, for reads that must not wait for a busy sandbox.
    catalog: Catalog,
    /// The live part of the sandboxes an operation has touched since the start (created on first use:
    /// a paused sandbox no one asks about costs nothing here).
    slots: RwLock<HashMap<String, Arc<Mutex<Slot>>>>,
    snapshots: RwLock<BTreeMap<String, SnapshotInfo>>,
    /// The volumes sandboxes mount.
    volumes: Volumes,
    sequence: AtomicU64,
    /// Called with every resumed sandbox (see [`ResumeHook`]).
    resume_hook: RwLock<Option<ResumeHook>>,
    /// Set by a graceful shutdown, whose pauses ignore the disk floor.
    shutting_down: AtomicBool,
    /// Tells the reaper thread to stop.
    stop: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

/// Read access to a lock that a panicking thread may have poisoned: the maps it guards are updated with
/// single inserts and removes, so they are consistent even then.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl Manager {
    /// Opens the manager on the runtime's data directory: every paused sandbox and snapshot found there is
    /// back, sandboxes that were running when the previous process died are reported as lost, and the
    /// timeout reaper starts.
    pub fn open(
        runtime: Runtime,
        config: ManagerConfig,
    ) -> Result<(Self, Recovery), LifecycleError> {
        let store = DurableStore::open(&runtime.config().data_dir)?;
        let (catalog, index, mut unreadable) =
            Catalog::open(store.clone(), config.compact_journal_after)?;
        let (snapshots, bad_snapshots) = store.load_snapshots()?;
        unreadable.extend(bad_snapshots);
        let (volumes, bad_volumes) = Volumes::open(&runtime.config().data_dir)?;
        unreadable.extend(bad_volumes);
        // Sandboxes the index has running or mid-transition (at most the running ones of the previous
        // process, never the paused ones): a blob means the pause completed, none means the memory is gone.
        for mut record in catalog.records_in(&[
            SandboxState::Running,
            SandboxState::Pausing,
            SandboxState::Resuming,
        ]) {
            record.state = if store.blob_path(&record.id).is_file() {
                SandboxState::Paused
            } else {
                SandboxState::Lost
            };
            // The half-written files of a sandbox that is not running are garbage: its blob has them all.
            remove_dir_if_present(&store.fs_dir(&record.id))?;
            catalog.put(&record)?;
        }
        let recovery = Recovery {
            paused: catalog.ids_in(&[SandboxState::Paused]),
            lost: catalog.ids_in(&[SandboxState::Lost]),
            snapshots: snapshots.len(),
            unreadable,
            index,
        };
        let sequence = catalog.next_sequence();
        let inner = Arc::new(Inner {
            runtime,
            store,
            config,
            templates: RwLock::new(HashMap::new()),
            catalog,
            slots: RwLock::new(HashMap::new()),
            snapshots: RwLock::new(snapshots.into_iter().map(|s| (s.id.clone(), s)).collect()),
            volumes,
            sequence: AtomicU64::new(sequence),
            resume_hook: RwLock::new(None),
            shutting_down: AtomicBool::new(false),
            stop: Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new())),
        });
        super::reaper::start(
            Arc::downgrade(&inner),
            inner.stop.clone(),
            inner.config.reaper_interval,
        );
        Ok((Self { inner }, recovery))
    }

    /// The runtime the manager runs sandboxes on.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// Sets what is done with every sandbox a resume brings back (see [`ResumeHook`]).
    pub fn set_resume_hook(&self, hook: ResumeHook) {
        *write(&self.inner.resume_hook) = Some(hook);
    }

    /// Runs the resume hook on a sandbox just resumed.
    fn resumed(&self, id: &str, sandbox: &mut Sandbox) {
        let hook = read(&self.inner.resume_hook).clone();
        if let Some(hook) = hook {
            hook(id, sandbox);
        }
    }

    /// Registers a template under `name` (replacing an earlier one of that name).
    pub fn register_template(&self, name: &str, wasm: &[u8]) -> Result<Template, LifecycleError> {
        let template = self.inner.runtime.load_template(name, wasm)?;
        // A command template is also a program of its name: a shell in any sandbox runs it by name.
        if template.kind() == crate::template::ModuleKind::Command {
            self.inner.runtime.register_program(name, template.sha256());
        }
        write(&self.inner.templates).insert(name.to_owned(), template.clone());
        Ok(template)
    }

    /// The template registered under `name`.
    pub fn template(&self, name: &str) -> Option<Template> {
        read(&self.inner.templates).get(name).cloned()
    }

    /// Names of the registered templates.
    pub fn template_names(&self) -> Vec<String> {
        let mut names: Vec<String> = read(&self.inner.templates).keys().cloned().collect();
        names.sort();
        names
    }

    /// Creates a sandbox from a template or a snapshot and starts it.
    pub fn create(&self, mut request: CreateRequest) -> Result<SandboxInfo, LifecycleError> {
        self.check_limit(SandboxState::Running)?;
        self.check_request(&mut request)?;
        let id = new_id("");
        let now = now_ms();
        let timeout = request.timeout.unwrap_or(self.inner.config.default_timeout);
        let fs_dir = self.inner.store.fs_dir(&id);
        let mut mounts = request.mounts.clone();
        let (template, sandbox) = if request.template.starts_with(SNAPSHOT_PREFIX) {
            let snapshot = self.snapshot_info(&request.template)?;
            let sandbox = self.start_from_snapshot(&snapshot, &fs_dir, &mut mounts);
            (snapshot.template, sandbox)
        } else {
            let template = self
                .template(&request.template)
                .ok_or_else(|| LifecycleError::UnknownTemplate(request.template.clone()))?;
            let options = SandboxOptions {
                dir: Some(fs_dir.clone()),
                env: request
                    .envs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                metadata: request.metadata.clone(),
                mounts: self.wasi_mounts(&mounts)?,
                ..SandboxOptions::default()
            };
            let sandbox = self
                .inner
                .runtime
                .create_sandbox(&template, options)
                .map_err(LifecycleError::from);
            let sandbox = sandbox.and_then(|s| {
                settings::create_mount_points(&fs_dir, &mounts)?;
                Ok(s)
            });
            // What programs written for a Unix sandbox expect to find (`echo x > /tmp/f`, `cd ~`).
            let skeleton = SKELETON_DIRS
                .iter()
                .try_for_each(|dir| std::fs::create_dir_all(fs_dir.join(dir)));
            let sandbox = sandbox.and_then(|s| skeleton.map(|()| s).map_err(LifecycleError::from));
            (template.name().to_owned(), sandbox)
        };
        let mut sandbox = match sandbox {
            Ok(sandbox) => sandbox,
            Err(error) => {
                remove_dir_if_present(&self.inner.store.sandbox_dir(&id))?;
                return Err(error);
            }
        };
        // The request's policy governs the guests' outbound connections from the start (a snapshot's
        // saved one is replaced as well).
        sandbox.set_egress_policy(egress_of(request.network.as_ref()));
        let from_snapshot = request.template.starts_with(SNAPSHOT_PREFIX);
        let record = SandboxRecord {
            id: id.clone(),
            template,
            template_sha256: sandbox.template().sha256_hex(),
            metadata: request.metadata,
            envs: request.envs,
            created_at_ms: now,
            started_at_ms: now,
            end_at_ms: now.saturating_add(to_ms(timeout)),
            timeout_ms: to_ms(timeout),
            state: SandboxState::Running,
            lifecycle: request.lifecycle,
            sequence: self.inner.sequence.fetch_add(1, Ordering::SeqCst),
            owner: request.owner,
            mounts,
            pause_mode: PauseMode::Full,
            network: request.network,
        };
        if let Err(error) = self.inner.catalog.put(&record) {
            drop(sandbox);
            remove_dir_if_present(&self.inner.store.sandbox_dir(&id))?;
            return Err(error.into());
        }
        let info = record.info();
        if from_snapshot {
            // The processes the snapshot suspended continue in the new sandbox.
            self.resumed(&id, &mut sandbox);
        }
        write(&self.inner.slots).insert(
            id,
            Arc::new(Mutex::new(Slot {
                live: Some(sandbox),
                last_activity: Instant::now(),
                killed: false,
            })),
        );
        self.log(
            &info.id,
            Event::now(Level::Info, "created", "Sandbox created")
                .with("template", &info.template)
                .with("from", &request.template),
        );
        Ok(info)
    }

    /// Pauses a running sandbox: `Ok(true)` if it paused, `Ok(false)` if it was already paused.
    pub fn pause(&self, id: &str) -> Result<bool, LifecycleError> {
        self.pause_with(id, PauseMode::Full)
    }

    /// Resumes a paused sandbox (its timeout then counts from now), or extends a running one's end time
    /// when `timeout` from now is later than it. Reports whether it resumed.
    pub fn connect(
        &self,
        id: &str,
        timeout: Option<Duration>,
    ) -> Result<Connected, LifecycleError> {
        self.connect_with(id, timeout, PauseMode::Full)
    }

    /// Sets a sandbox's end time to now + `timeout`. For a paused sandbox, `timeout` applies from its
    /// next resume.
    pub fn set_timeout(&self, id: &str, timeout: Duration) -> Result<SandboxInfo, LifecycleError> {
        let mut slot = self.lock(id)?;
        let mut record = self.record(id)?;
        record.timeout_ms = to_ms(timeout);
        if record.state == SandboxState::Running {
            record.end_at_ms = now_ms().saturating_add(record.timeout_ms);
        }
        slot.last_activity = Instant::now();
        let info = record.info();
        self.save(record)?;
        Ok(info)
    }

    /// Kills a sandbox, running, paused or lost, deleting everything stored of it.
    pub fn kill(&self, id: &str) -> Result<(), LifecycleError> {
        let mut slot = self.lock(id)?;
        // Durably gone first: if that fails, the sandbox is untouched.
        self.inner.catalog.remove(id)?;
        slot.killed = true;
        slot.live = None;
        write(&self.inner.slots).remove(id);
        // Its commands are ending and log that they ended: the directory goes between two appends.
        super::events::exclusive(|| self.inner.store.delete_sandbox(id))?;
        Ok(())
    }

    /// The sandbox's current description.
    pub fn info(&self, id: &str) -> Result<SandboxInfo, LifecycleError> {
        self.inner
            .catalog
            .info(id)
            .ok_or_else(|| LifecycleError::NotFound(id.to_owned()))
    }

    /// How many sandboxes are in `state`, without visiting them.
    pub fn count(&self, state: SandboxState) -> usize {
        self.inner.catalog.count(state)
    }

    /// Compacts the index's journal into a new snapshot now (it is also done automatically, see
    /// [`ManagerConfig::compact_journal_after`]), so that the next start replays nothing. Returns how
    /// many records the snapshot holds.
    pub fn compact_index(&self) -> Result<u64, LifecycleError> {
        Ok(self.inner.catalog.compact()?)
    }

    /// One page of the sandboxes matching `query`, oldest first.
    pub fn list(&self, query: &ListQuery) -> Result<Page, LifecycleError> {
        let limit = query::limit(query)?;
        let after = query
            .next_token
            .as_deref()
            .map(query::decode_token)
            .transpose()?;
        let page = self.inner.catalog.list(query, after, limit);
        Ok(Page {
            items: page.items,
            next_token: page.next.map(query::encode_token),
        })
    }

    /// Runs `operation` on the live sandbox: resumes it first if it is paused and its policy says so.
    pub fn with_sandbox<R>(
        &self,
        id: &str,
        operation: impl FnOnce(&mut Sandbox) -> R,
    ) -> Result<R, LifecycleError> {
        let mut slot = self.lock(id)?;
        let record = self.record(id)?;
        match record.state {
            // A filesystem-only blob is never resumed by traffic: its processes would not be there.
            SandboxState::Paused
                if record.lifecycle.auto_resume && record.pause_mode == PauseMode::Full =>
            {
                self.resume_locked(id, &mut slot, None)?;
                self.log(
                    id,
                    Event::now(Level::Info, "resumed", "Sandbox resumed automatically"),
                );
            }
            SandboxState::Paused => return Err(LifecycleError::Paused(id.to_owned())),
            SandboxState::Lost => return Err(LifecycleError::Lost(id.to_owned())),
            _ => {}
        }
        slot.last_activity = Instant::now();
        let sandbox = slot
            .live
            .as_mut()
            .ok_or_else(|| LifecycleError::Paused(id.to_owned()))?;
        Ok(operation(sandbox))
    }

    /// Takes an immutable snapshot of a sandbox (running or paused) from which new sandboxes can start.
    pub fn snapshot(&self, id: &str, name: Option<String>) -> Result<SnapshotInfo, LifecycleError> {
        let mut slot = self.lock(id)?;
        let record = self.record(id)?;
        let snapshot_id = new_id(SNAPSHOT_PREFIX);
        let dir = self.inner.store.snapshot_dir(&snapshot_id);
        std::fs::create_dir_all(&dir)?;
        let blob = self.inner.store.snapshot_blob(&snapshot_id);
        let written = match (record.state, slot.live.as_mut()) {
            (SandboxState::Running, Some(sandbox)) => sandbox
                .snapshot(&blob, &Default::default())
                .map(|_| ())
                .map_err(LifecycleError::from),
            (SandboxState::Paused, _) => {
                copy_durably(&self.inner.store.blob_path(id), &blob).map_err(LifecycleError::from)
            }
            _ => Err(LifecycleError::Lost(id.to_owned())),
        };
        if let Err(error) = written {
            remove_dir_if_present(&dir)?;
            return Err(error);
        }
        let info = SnapshotInfo {
            id: snapshot_id.clone(),
            name,
            source_sandbox: id.to_owned(),
            template: record.template,
            metadata: record.metadata,
            created_at_ms: now_ms(),
            size_bytes: std::fs::metadata(&blob)?.len(),
            owner: record.owner,
            mode: PauseMode::Full,
            mounts: record.mounts,
        };
        self.inner.store.save_snapshot(&info)?;
        write(&self.inner.snapshots).insert(snapshot_id, info.clone());
        Ok(info)
    }

    /// Opens the blob of a paused sandbox, to copy it to another server ([`Manager::import_blob`]). The
    /// file is opened under the sandbox's lock, so a concurrent resume cannot delete it half-way: once
    /// open, its contents stay readable whatever happens to the path.
    pub fn export_blob(&self, id: &str) -> Result<std::fs::File, LifecycleError> {
        let _slot = self.lock(id)?;
        match self.record(id)?.state {
            SandboxState::Paused => Ok(std::fs::File::open(self.inner.store.blob_path(id))?),
            SandboxState::Lost => Err(LifecycleError::Lost(id.to_owned())),
            _ => Err(LifecycleError::Running(id.to_owned())),
        }
    }

    /// Accepts a blob exported from another manager as a new paused sandbox with a new id, its template,
    /// metadata and environment taken from the blob; `connect` resumes it. The blob is decoded and every
    /// checksum verified before anything is written, and its module must be a registered template's, so
    /// a sandbox that could never resume is refused rather than stored.
    pub fn import_blob(&self, blob: &[u8]) -> Result<SandboxInfo, LifecycleError> {
        self.import_blob_owned(blob, None)
    }

    /// [`Manager::import_blob`], the new sandbox owned by `owner` (see [`SandboxRecord::owner`]).
    pub fn import_blob_owned(
        &self,
        blob: &[u8],
        owner: Option<String>,
    ) -> Result<SandboxInfo, LifecycleError> {
        let decoded = crate::state::decode_sandbox_blob(
            blob.to_vec(),
            &self.inner.runtime.config().decode_limits,
        )
        .map_err(LifecycleError::InvalidBlob)?;
        let module_sha256 = hex::encode(decoded.header.module_sha256);
        let manifest = decoded.manifest;
        // A blob without processes holds files only (a filesystem pause exported): resuming it starts
        // the template afresh, so a reactor template gets its process.
        let pause_mode = if manifest.processes.is_empty() {
            PauseMode::Filesystem
        } else {
            PauseMode::Full
        };
        if self
            .inner
            .runtime
            .template_by_hash(&decoded.header.module_sha256)
            .is_none()
        {
            return Err(LifecycleError::UnknownModule {
                template: manifest.template.name,
                module_sha256,
            });
        }
        self.check_limit(SandboxState::Paused)?;
        let id = new_id("");
        let now = now_ms();
        let timeout = to_ms(self.inner.config.default_timeout);
        let record = SandboxRecord {
            id: id.clone(),
            template: manifest.template.name,
            template_sha256: module_sha256,
            metadata: manifest.metadata,
            envs: manifest.env.into_iter().collect(),
            created_at_ms: now,
            started_at_ms: now,
            end_at_ms: now.saturating_add(timeout),
            timeout_ms: timeout,
            state: SandboxState::Paused,
            lifecycle: LifecyclePolicy::default(),
            sequence: self.inner.sequence.fetch_add(1, Ordering::SeqCst),
            owner,
            mounts: Vec::new(),
            pause_mode,
            network: None,
        };
        // Blob first, record second: a crash in between leaves a directory without a record, which no
        // one lists, rather than a record of a paused sandbox without its blob.
        let stored = std::fs::create_dir_all(self.inner.store.sandbox_dir(&id))
            .and_then(|()| write_atomic(&self.inner.store.blob_path(&id), blob))
            .and_then(|()| self.inner.catalog.put(&record));
        if let Err(error) = stored {
            remove_dir_if_present(&self.inner.store.sandbox_dir(&id))?;
            return Err(error.into());
        }
        Ok(record.info())
    }

    /// Gives every sandbox and snapshot without an owner (records written before owners existed) to
    /// `owner`, durably, and returns how many were adopted. A server calls this at startup with its
    /// primary key's identifier, so that what one key created before keys were told apart stays that key's.
    pub fn adopt_unowned(&self, owner: &str) -> Result<usize, LifecycleError> {
        let mut adopted = 0;
        for id in self.inner.catalog.unowned() {
            // Under the sandbox's lock, so no transition writes an older copy of the record over this one.
            let _slot = match self.lock(&id) {
                Ok(slot) => slot,
                Err(LifecycleError::NotFound(_)) => continue,
                Err(error) => return Err(error),
            };
            let mut record = self.record(&id)?;
            if record.owner.is_none() {
                record.owner = Some(owner.to_owned());
                self.save(record)?;
                adopted += 1;
            }
        }
        let unowned: Vec<SnapshotInfo> = read(&self.inner.snapshots)
            .values()
            .filter(|s| s.owner.is_none())
            .cloned()
            .collect();
        for mut snapshot in unowned {
            snapshot.owner = Some(owner.to_owned());
            self.inner.store.save_snapshot(&snapshot)?;
            write(&self.inner.snapshots).insert(snapshot.id.clone(), snapshot);
            adopted += 1;
        }
        Ok(adopted)
    }

    /// The description of snapshot `id`.
    pub fn snapshot_by_id(&self, id: &str) -> Result<SnapshotInfo, LifecycleError> {
        self.snapshot_info(id)
    }

    /// Every snapshot, oldest first.
    pub fn list_snapshots(&self) -> Vec<SnapshotInfo> {
        let mut all: Vec<SnapshotInfo> = read(&self.inner.snapshots).values().cloned().collect();
        all.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        all
    }

    /// Deletes a snapshot; sandboxes started from it are not affected.
    pub fn delete_snapshot(&self, id: &str) -> Result<(), LifecycleError> {
        if write(&self.inner.snapshots).remove(id).is_none() {
            return Err(LifecycleError::SnapshotNotFound(id.to_owned()));
        }
        self.inner.store.delete_snapshot(id)?;
        Ok(())
    }

    /// Starts `count` new sandboxes from a sandbox (running or paused; it is snapshotted first) or from a
    /// snapshot. Each new sandbox succeeds or fails on its own.
    pub fn fork(
        &self,
        source: &str,
        count: usize,
        request: CreateRequest,
    ) -> Result<Vec<Result<SandboxInfo, LifecycleError>>, LifecycleError> {
        if count == 0 || count > MAX_FORK {
            return Err(LifecycleError::ForkCount(count));
        }
        let (snapshot, temporary) = if source.starts_with(SNAPSHOT_PREFIX) {
            (self.snapshot_info(source)?, false)
        } else {
            (self.snapshot(source, None)?, true)
        };
        let results = (0..count)
            .map(|_| {
                self.create(CreateRequest {
                    template: snapshot.id.clone(),
                    ..request.clone()
                })
            })
            .collect();
        if temporary {
            self.delete_snapshot(&snapshot.id)?;
        }
        Ok(results)
    }

    /// Pauses every running sandbox (graceful shutdown) and stops the reaper. Sandboxes that cannot be
    /// paused are listed; the next start reports them as lost.
    pub fn shutdown(&self) -> Shutdown {
        self.inner.stop_reaper();
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        let mut report = Shutdown::default();
        // Only the sandboxes that may be running: the paused ones (nearly all, on a busy node) have
        // nothing to pause.
        let ids = self.inner.catalog.ids_in(&[
            SandboxState::Running,
            SandboxState::Pausing,
            SandboxState::Resuming,
        ]);
        for id in ids {
            match self.pause(&id) {
                Ok(true) => report.paused.push(id),
                Ok(false) | Err(LifecycleError::NotFound(_)) | Err(LifecycleError::Lost(_)) => {}
                Err(error) => report.failed.push((id, error)),
            }
        }
        report
    }

    /// Applies timeouts: called by the reaper thread, and usable directly (tests, a custom scheduler).
    pub fn reap(&self) {
        let now = now_ms();
        // Only the running sandboxes past their end time, and those with an idle timeout: a pass costs
        // what is due, not what exists.
        for id in self.inner.catalog.due(now) {
            let Some(slot) = read(&self.inner.slots).get(&id).cloned() else {
                continue;
            };
            // Queue for the lock briefly (so a guest called in a tight loop cannot starve the timeout, as
            // the lock is handed over fairly to waiters); a sandbox busy longer is looked at next round.
            let Some(mut slot) = slot.try_lock_arc_for(Duration::from_millis(50)) else {
                continue;
            };
            if slot.killed {
                continue;
            }
            let Ok(current) = self.record(&id) else {
                continue;
            };
            let idle = current
                .lifecycle
                .idle_timeout
                .is_some_and(|idle| slot.last_activity.elapsed() >= idle);
            if current.state != SandboxState::Running || (now < current.end_at_ms && !idle) {
                continue;
            }
            self.log(&id, Event::now(Level::Info, "timeout", "Sandbox timed out"));
            let outcome = match current.lifecycle.on_timeout {
                super::record::OnTimeout::Pause => {
                    let mode = current.lifecycle.timeout_pause_mode;
                    self.pause_mode_locked(&id, &mut slot, mode)
                }
                super::record::OnTimeout::Kill => {
                    drop(slot);
                    self.kill(&id)
                }
            };
            if let Err(error) = outcome {
                tracing::warn!(sandbox = %id, %error, "timeout could not be applied");
            }
        }
    }

    fn pause_locked(&self, id: &str, slot: &mut SlotGuard) -> Result<(), LifecycleError> {
        self.check_limit(SandboxState::Paused)?;
        let sandbox = slot
            .live
            .as_mut()
            .ok_or_else(|| LifecycleError::Lost(id.to_owned()))?;
        sandbox.pause(&self.inner.store.blob_path(id))?;
        slot.live = None;
        let mut record = self.record(id)?;
        record.state = SandboxState::Paused;
        self.save(record)?;
        remove_dir_if_present(&self.inner.store.fs_dir(id))?;
        Ok(())
    }

    fn resume_locked(
        &self,
        id: &str,
        slot: &mut SlotGuard,
        timeout: Option<Duration>,
    ) -> Result<(), LifecycleError> {
        self.check_limit(SandboxState::Running)?;
        let mut record = self.record(id)?;
        let fs_dir = self.inner.store.fs_dir(id);
        // Files left by a resume that crashed half-way are incomplete: the blob has them all.
        remove_dir_if_present(&fs_dir)?;
        let template = parse_sha(&record.template_sha256)
            .and_then(|sha| self.inner.runtime.template_by_hash(&sha))
            .or_else(|| self.template(&record.template))
            .ok_or_else(|| LifecycleError::UnknownTemplate(record.template.clone()))?;
        let options = ResumeOptions {
            dir: Some(fs_dir),
            template: Some(template),
            mounts: self.wasi_mounts(&record.mounts)?,
            // The record is what the policy is now (it may have changed while the sandbox was paused).
            egress: Some(egress_of(record.network.as_ref())),
            ..ResumeOptions::default()
        };
        let mut sandbox = self
            .inner
            .runtime
            .resume(&self.inner.store.blob_path(id), options)?;
        if let Some(timeout) = timeout {
            record.timeout_ms = to_ms(timeout);
        }
        let now = now_ms();
        record.state = SandboxState::Running;
        record.started_at_ms = now;
        record.end_at_ms = now.saturating_add(record.timeout_ms);
        self.save(record)?;
        std::fs::remove_file(self.inner.store.blob_path(id))?;
        self.resumed(id, &mut sandbox);
        slot.live = Some(sandbox);
        slot.last_activity = Instant::now();
        Ok(())
    }

    /// Locks sandbox `id`, waiting at most the busy deadline.
    fn lock(&self, id: &str) -> Result<SlotGuard, LifecycleError> {
        if !is_valid(id, "") {
            return Err(LifecycleError::NotFound(id.to_owned()));
        }
        // Bound first: a guard in the `match` would be held through `slot_of_stored`'s write lock.
        let existing = read(&self.inner.slots).get(id).cloned();
        let slot = match existing {
            Some(slot) => slot,
            None => self.slot_of_stored(id)?,
        };
        let guard = slot
            .try_lock_arc_for(self.inner.config.busy_deadline)
            .ok_or_else(|| LifecycleError::Busy(id.to_owned()))?;
        if guard.killed {
            return Err(LifecycleError::NotFound(id.to_owned()));
        }
        Ok(guard)
    }

    /// The slot of a sandbox no operation has touched since the start, made on first use. Checked
    /// against the index under the slots' lock: a kill removes the sandbox from the index before it
    /// removes its slot, so a sandbox killed meanwhile is not given a new one.
    fn slot_of_stored(&self, id: &str) -> Result<Arc<Mutex<Slot>>, LifecycleError> {
        let mut slots = write(&self.inner.slots);
        if let Some(slot) = slots.get(id) {
            return Ok(slot.clone());
        }
        if !self.inner.catalog.contains(id) {
            return Err(LifecycleError::NotFound(id.to_owned()));
        }
        let slot = Arc::new(Mutex::new(Slot {
            live: None,
            last_activity: Instant::now(),
            killed: false,
        }));
        slots.insert(id.to_owned(), slot.clone());
        Ok(slot)
    }

    fn record(&self, id: &str) -> Result<SandboxRecord, LifecycleError> {
        self.inner
            .catalog
            .get(id)
            .ok_or_else(|| LifecycleError::NotFound(id.to_owned()))
    }

    /// Writes a record durably (the journal, then its file), then publishes it to readers.
    fn save(&self, record: SandboxRecord) -> Result<(), LifecycleError> {
        self.inner.catalog.put(&record)?;
        Ok(())
    }

    fn snapshot_info(&self, id: &str) -> Result<SnapshotInfo, LifecycleError> {
        read(&self.inner.snapshots)
            .get(id)
            .cloned()
            .ok_or_else(|| LifecycleError::SnapshotNotFound(id.to_owned()))
    }

    fn check_limit(&self, state: SandboxState) -> Result<(), LifecycleError> {
        let (what, limit) = match state {
            SandboxState::Paused => ("paused sandboxes", self.inner.config.max_paused),
            _ => ("running sandboxes", self.inner.config.max_running),
        };
        // Counted by the index, not by visiting the sandboxes.
        if self.inner.catalog.count(state) >= limit {
            return Err(LifecycleError::Limit { what, limit });
        }
        let floor = self.inner.config.min_free_disk;
        if state == SandboxState::Paused
            && floor > 0
            && !self.inner.shutting_down.load(Ordering::SeqCst)
        {
            let available = self.inner.store.free_bytes()?;
            if available < floor {
                return Err(LifecycleError::InsufficientDisk { available, floor });
            }
        }
        Ok(())
    }
}

impl Inner {
    fn stop_reaper(&self) {
        let (stopped, wake) = &*self.stop;
        *stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_reaper();
    }
}

impl Manager {
    /// A handle on a manager the reaper upgraded from its weak reference.
    pub(crate) fn from_inner(inner: Arc<Inner>) -> Self {
        Self { inner }
    }
}

/// Copies a file durably (the copy is synced before this returns).
fn copy_durably(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::copy(from, to)?;
    std::fs::File::open(to)?.sync_all()
}

fn parse_sha(hex_digest: &str) -> Option<[u8; 32]> {
    hex::decode(hex_digest).ok()?.try_into().ok()
}

/// The egress policy a stored network policy asks for; the default one when there is none.
pub(crate) fn egress_of(network: Option<&NetworkPolicy>) -> crate::net::EgressPolicy {
    network.map_or_else(
        crate::net::EgressPolicy::default,
        crate::net::EgressPolicy::from_network_policy,
    )
}
