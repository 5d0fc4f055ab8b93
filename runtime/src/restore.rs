//! Restore: a blob back into a live sandbox. The files are unpacked into a fresh directory, then every
//! process is re-instantiated from its (cached) module *without* running any of its code, its memories are
//! grown to their saved size and overwritten, every mutable global is set, and its WASI state re-opens each
//! file at the same fd number and offset.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use wasmtime::{Instance, Store, V128, Val};

use crate::instantiate::{SpawnError, instantiate, new_store};
use crate::limits::SandboxLimits;
use crate::process::{Process, ProcessData};
use crate::runtime::Runtime;
use crate::sandbox::{Sandbox, random_name};
use crate::snapshot::{ArchiveError, DecodeError, DecodedBlob, MemoryImage};
use crate::state::{
    GlobalState, GlobalValue, MemoryState, ProcessState, SandboxManifest, TableState,
};
use crate::template::Template;
use crate::wasi::{RestoreLinks, Stdin, WasiCtx, WasiRestoreError};

/// Bytes in a wasm page.
const WASM_PAGE: u64 = 65536;

/// How a blob is resumed.
#[derive(Debug, Clone, Default)]
pub struct ResumeOptions {
    /// Where to unpack the sandbox's files; must be missing or empty. When `None`, a fresh directory under
    /// the runtime's data directory.
    pub dir: Option<PathBuf>,
    /// Limits for the resumed sandbox; the runtime's defaults when `None`.
    pub limits: Option<SandboxLimits>,
    /// The template the blob must belong to. When `None`, the template is found among those loaded into
    /// the runtime by the module hash the blob records.
    pub template: Option<Template>,
    /// The extra host directories the paused sandbox had ([`crate::SandboxOptions::mounts`]): the blob
    /// does not hold them, and its processes' open files are re-opened in them.
    pub mounts: Vec<crate::wasi::Mount>,
    /// The policy for the resumed guests' outbound connections, in place of the one the blob saved.
    pub egress: Option<crate::net::EgressPolicy>,
}

/// Why a blob could not be resumed. Nothing is left behind: a directory created for the sandbox is removed.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// The blob is unreadable, corrupt, truncated, of another format version, or over the limits.
    #[error("the blob cannot be read")]
    Decode(#[from] DecodeError),
    /// A saved pipe holds more bytes than a pipe can (a corrupt or forged blob).
    #[error("saved pipe {pipe} holds {bytes} bytes, more than a pipe holds")]
    Pipe {
        /// The pipe's saved id.
        pipe: u64,
        /// The bytes it claims to hold.
        bytes: usize,
    },
    /// A saved listening port cannot be listened on again (a port saved twice, or more listeners than
    /// the limits allow: a corrupt or forged blob, or lower limits).
    #[error("saved listening port {port} cannot be restored")]
    Listener {
        /// The port.
        port: u16,
    },
    /// The blob belongs to a different module than the template given.
    #[error("the blob was made from module {found}, not from template {template} ({expected})")]
    ModuleMismatch {
        /// The template asked for.
        template: String,
        /// Its module hash.
        expected: String,
        /// The module hash recorded in the blob.
        found: String,
    },
    /// No template with the module hash the blob records has been loaded into this runtime.
    #[error("no template with module {0} is loaded; load it before resuming")]
    UnknownModule(String),
    /// The target directory exists and is not empty.
    #[error("the sandbox directory {0} is not empty")]
    DirNotEmpty(PathBuf),
    /// The target directory could not be created.
    #[error("could not create the sandbox directory {path}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// The sandbox's files could not be unpacked.
    #[error("the sandbox's files could not be restored")]
    Archive(#[from] ArchiveError),
    /// A process's WASI state could not be restored (e.g. a file it had open is missing from the archive).
    #[error("process {pid}'s WASI state could not be restored")]
    Wasi {
        /// The process.
        pid: u32,
        /// Why.
        #[source]
        source: WasiRestoreError,
    },
    /// A process could not be instantiated.
    #[error("process {pid} could not be instantiated")]
    Instantiate {
        /// The process.
        pid: u32,
        /// Why.
        #[source]
        source: SpawnError,
    },
    /// A process was suspended in a call by a module instrumented differently from this runtime's (another
    /// Stasis version's unwind stage): its saved frames mean nothing to this module.
    #[error(
        "process {pid} was suspended in a call by instrumented module {saved}, but this runtime's is {current}; \
         resume the blob with the Stasis version that paused it"
    )]
    Instrumentation {
        /// The process.
        pid: u32,
        /// The instrumented module's hash recorded in the blob.
        saved: String,
        /// This runtime's.
        current: String,
    },
    /// The saved state does not fit the module (a global or memory it lacks, a memory over the limit).
    #[error("process {pid}'s saved state does not fit its module: {reason}")]
    Layout {
        /// The process.
        pid: u32,
        /// What does not fit.
        reason: String,
    },
}

impl Runtime {
    /// Resumes a sandbox from a blob written by [`Sandbox::pause`] or [`Sandbox::snapshot`] — in this
    /// process or another, on this machine or another. The returned sandbox continues exactly where the
    /// paused one was.
    ///
    /// Memory pages are mapped copy-on-write from the blob file rather than copied, so resuming costs
    /// little whatever the memory size. The file may be renamed over or deleted afterwards (as Stasis's own
    /// writes do), but must not be truncated or rewritten in place while the sandbox lives.
    pub fn resume(&self, blob: &Path, options: ResumeOptions) -> Result<Sandbox, ResumeError> {
        let mut decoded: DecodedBlob<SandboxManifest> =
            crate::state::read_sandbox_blob(blob, &self.config().decode_limits)?;
        let found = hex::encode(decoded.header.module_sha256);
        let template = match options.template {
            Some(template) if template.sha256() != decoded.header.module_sha256 => {
                return Err(ResumeError::ModuleMismatch {
                    template: template.name().to_owned(),
                    expected: template.sha256_hex(),
                    found,
                });
            }
            Some(template) => template,
            None => self
                .template_by_hash(&decoded.header.module_sha256)
                .ok_or(ResumeError::UnknownModule(found))?,
        };
        let (dir, owns_dir) = match options.dir {
            Some(dir) => (dir, false),
            None => (
                self.config().data_dir.join("scratch").join(random_name()),
                true,
            ),
        };
        prepare_dir(&dir)?;
        let limits = options
            .limits
            .unwrap_or_else(|| self.config().limits.clone());
        let quota = std::sync::Arc::new(crate::wasi::DiskQuota::new(
            limits.max_disk_bytes,
            limits.max_files,
        ));
        let usage = crate::usage::SandboxUsage::new();
        let saved_network = std::mem::take(&mut decoded.manifest.network);
        let network = crate::net::Network::new(dir.display().to_string(), limits.network());
        network.set_egress_policy(
            options
                .egress
                .unwrap_or_else(|| saved_network.egress.clone()),
        );
        let kernel = crate::sandbox::new_kernel(
            self,
            &dir,
            &options.mounts,
            &limits,
            &quota,
            &usage,
            network.clone(),
        );
        let mut sandbox = Sandbox {
            runtime: self.clone(),
            template,
            dir,
            owns_dir,
            args: Vec::new(),
            env: decoded.manifest.env.clone(),
            metadata: decoded.manifest.metadata.clone(),
            quota,
            limits,
            processes: Default::default(),
            kernel,
            paused: false,
            mounts: options.mounts,
            usage,
        };
        // From here on, dropping `sandbox` on an error removes a directory we created.
        decoded.filesystem.restore_into(&sandbox.dir)?;
        // The pipes' bytes move into the live pipes; nothing else reads them.
        let pipes = std::mem::take(&mut decoded.manifest.kernel.pipes);
        let images: HashMap<(u32, u32), &MemoryImage> = decoded
            .memories
            .iter()
            .map(|image| ((image.process(), image.memory()), image))
            .collect();
        let mut links = RestoreLinks::with_pipes(pipes.into_iter().map(|p| (p.id, p.bytes)))
            .map_err(|(pipe, bytes)| ResumeError::Pipe { pipe, bytes })?;
        links
            .with_network(&network, &saved_network.listeners)
            .map_err(|saved| ResumeError::Listener {
                port: saved.addr.port(),
            })?;
        sandbox.kernel.restore(&decoded.manifest.kernel.children);
        for state in &decoded.manifest.processes {
            let process = restore_process(&sandbox, state, &images, &links)?;
            links.add(process.pid, &process.store.data().wasi);
            sandbox.insert_process(process);
        }
        // Only the fds hold the pipes now: an end no fd holds is closed.
        drop(links);
        // A child the blob lists as running but does not hold (it could not be suspended for a snapshot)
        // is gone: its parent's wait sees it killed.
        for pid in sandbox.kernel.suspended() {
            if !sandbox.processes.contains_key(&pid) {
                sandbox
                    .kernel
                    .exited(pid, crate::wasi::StopReason::Kill.exit_code());
            }
        }
        Ok(sandbox)
    }
}

/// Makes sure `dir` exists and is empty.
fn prepare_dir(dir: &Path) -> Result<(), ResumeError> {
    std::fs::create_dir_all(dir).map_err(|source| ResumeError::Dir {
        path: dir.to_owned(),
        source,
    })?;
    let mut entries = std::fs::read_dir(dir).map_err(|source| ResumeError::Dir {
        path: dir.to_owned(),
        source,
    })?;
    if entries.next().is_some() {
        return Err(ResumeError::DirNotEmpty(dir.to_owned()));
    }
    Ok(())
}

/// Re-creates one process: instantiate without running code, then put back memories, globals and WASI.
fn restore_process(
    sandbox: &Sandbox,
    state: &ProcessState,
    images: &HashMap<(u32, u32), &MemoryImage>,
    links: &RestoreLinks,
) -> Result<Process, ResumeError> {
    let pid = state.pid;
    let layout_error = |reason: String| ResumeError::Layout { pid, reason };
    let sha = parse_sha(&state.module.module_sha256)
        .ok_or_else(|| layout_error("bad module hash".into()))?;
    let template = sandbox
        .runtime
        .template_by_hash(&sha)
        .ok_or_else(|| ResumeError::UnknownModule(state.module.module_sha256.clone()))?;
    if state.suspended.is_some() && state.instrumented_sha256 != template.instrumented_sha256_hex()
    {
        return Err(ResumeError::Instrumentation {
            pid,
            saved: state.instrumented_sha256.clone(),
            current: template.instrumented_sha256_hex(),
        });
    }
    let config = sandbox.wasi_config(template.name(), &[], Stdin::Empty);
    let mut wasi = WasiCtx::restore_linked(config, &state.wasi, links)
        .map_err(|source| ResumeError::Wasi { pid, source })?;
    wasi.set_process_host(pid, sandbox.kernel.clone());
    let interrupt = std::sync::Arc::new(crate::wasi::Interrupt::new());
    wasi.set_interrupt(interrupt.clone());
    let mut store = new_store(
        sandbox.runtime.engine(),
        &sandbox.limits,
        wasi,
        &sandbox.usage,
    );
    let instance = instantiate(&template, &mut store)
        .map_err(|source| ResumeError::Instantiate { pid, source })?;
    crate::sandbox::attach_unwind_globals(&template, &mut store, &instance)
        .map_err(|source| ResumeError::Instantiate { pid, source })?;
    let parts = InstanceParts {
        globals: &state.globals,
        memories: &state.memories,
        tables: &state.tables,
        suspended: state.suspended.is_some(),
    };
    put_back(&template, &mut store, &instance, &parts, |index| {
        images.get(&(pid, index)).copied()
    })
    .map_err(|error| match error {
        PutBackError::Layout(reason) => ResumeError::Layout { pid, reason },
        PutBackError::Decode(error) => ResumeError::Decode(error),
    })?;

    Ok(Process {
        pid,
        template,
        store,
        instance,
        poisoned: state.poisoned,
        label: state.label.clone(),
        kind: state.kind,
        interrupt,
        suspended: state.suspended.clone(),
    })
}

/// What of a process's saved state [`put_back`] writes into a fresh instance.
pub(crate) struct InstanceParts<'a> {
    /// Every mutable global's value.
    pub(crate) globals: &'a [GlobalState],
    /// Every memory's size (the bytes come from the images).
    pub(crate) memories: &'a [MemoryState],
    /// Every table's size, which must be the module's.
    pub(crate) tables: &'a [TableState],
    /// Whether a call was suspended: then the unwind stage's own state must be there too.
    pub(crate) suspended: bool,
}

/// Why saved state could not be put back into an instance.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PutBackError {
    /// The state does not fit the module (a global or memory it lacks, a memory over the limit).
    #[error("{0}")]
    Layout(String),
    /// A memory image could not be read.
    #[error("a memory image could not be read")]
    Decode(#[source] DecodeError),
}

/// Writes `parts` into `instance`, a fresh instance of `template` none of whose code has run: grows each
/// memory to its saved size and overwrites it with its image (`images` by memory index, mapped copy-on-write
/// when it comes from a file), sets every mutable global and checks the tables. What a resume does for each
/// process, and what starting a program from its pre-initialised image does.
pub(crate) fn put_back<'i>(
    template: &Template,
    store: &mut Store<ProcessData>,
    instance: &Instance,
    parts: &InstanceParts<'_>,
    images: impl Fn(u32) -> Option<&'i MemoryImage>,
) -> Result<(), PutBackError> {
    let layout = &template.inner.layout;
    // The unwind stage's own state may be missing from a blob made before it (or by a module without it):
    // it then starts fresh, which is right for a process that was not suspended.
    let unwind_globals: Vec<u32> = layout
        .unwind
        .iter()
        .flat_map(|u| [Some(u.state_global), Some(u.sp_global), u.countdown_global])
        .flatten()
        .collect();
    let frame_memory = layout.unwind.as_ref().map(|u| u.frame_memory);

    for saved in parts.memories {
        if !layout.memories.iter().any(|m| m.index == saved.index) {
            return Err(PutBackError::Layout(format!(
                "memory {} is saved, but the module has no such memory",
                saved.index
            )));
        }
    }
    for desc in &layout.memories {
        let Some(saved) = parts.memories.iter().find(|m| m.index == desc.index) else {
            if Some(desc.index) == frame_memory && !parts.suspended {
                continue;
            }
            return Err(PutBackError::Layout(format!(
                "the module has memory {}, which the blob does not have",
                desc.index
            )));
        };
        let memory = instance
            .get_memory(&mut *store, &desc.export_name)
            .ok_or_else(|| {
                PutBackError::Layout(format!("memory {} is not exported", desc.index))
            })?;
        let image = images(saved.index).ok_or_else(|| {
            PutBackError::Layout(format!(
                "the blob has no contents for memory {}",
                saved.index
            ))
        })?;
        if image.byte_len() != saved.pages.saturating_mul(WASM_PAGE) {
            return Err(PutBackError::Layout(format!(
                "memory {} image size disagrees with its page count",
                saved.index
            )));
        }
        let current = memory.size(&*store);
        if saved.pages < current {
            return Err(PutBackError::Layout(format!(
                "memory {} saved smaller than the module's minimum",
                saved.index
            )));
        }
        memory
            .grow(&mut *store, saved.pages - current)
            .map_err(|e| {
                PutBackError::Layout(format!(
                    "memory {} cannot grow to {} pages: {e}",
                    saved.index, saved.pages
                ))
            })?;
        let data = memory.data_mut(&mut *store);
        if !map_runs(image, data) {
            image.copy_into(data).map_err(PutBackError::Decode)?;
        }
        // A fresh instance is all zeros except where active data segments were copied in; wherever the
        // saved memory had zero pages, those segments must be wiped again.
        for segment in layout
            .data_segments
            .iter()
            .filter(|s| s.memory == saved.index)
        {
            for (offset, len) in image.absent_runs() {
                let start = segment.offset.max(offset);
                let end = (segment.offset + segment.len)
                    .min(offset + len)
                    .min(data.len() as u64);
                if start < end {
                    data[start as usize..end as usize].fill(0);
                }
            }
        }
    }

    for saved in parts.globals {
        let known = layout.globals.iter().any(|g| g.index == saved.index);
        // A blob's unwind state for a module this runtime did not rewrite is void (nothing is suspended).
        let void = !parts.suspended && !known;
        if !known && !void {
            return Err(PutBackError::Layout(format!(
                "global {} is saved, but the module has no such mutable global",
                saved.index
            )));
        }
    }
    for desc in &layout.globals {
        let Some(saved) = parts.globals.iter().find(|g| g.index == desc.index) else {
            if unwind_globals.contains(&desc.index) && !parts.suspended {
                continue;
            }
            return Err(PutBackError::Layout(format!(
                "the module has mutable global {}, which the blob does not have",
                desc.index
            )));
        };
        let global = instance
            .get_global(&mut *store, &desc.export_name)
            .ok_or_else(|| {
                PutBackError::Layout(format!("global {} is not exported", desc.index))
            })?;
        let value = match saved.value {
            GlobalValue::I32(v) => Val::I32(v),
            GlobalValue::I64(v) => Val::I64(v),
            GlobalValue::F32(bits) => Val::F32(bits),
            GlobalValue::F64(bits) => Val::F64(bits),
            GlobalValue::V128(v) => Val::V128(V128::from(v)),
        };
        global
            .set(&mut *store, value)
            .map_err(|e| PutBackError::Layout(format!("global {}: {e}", desc.index)))?;
    }

    for (saved, desc) in parts.tables.iter().zip(&layout.tables) {
        let table = instance
            .get_table(&mut *store, &desc.export_name)
            .ok_or_else(|| PutBackError::Layout(format!("table {} is not exported", desc.index)))?;
        if table.size(&*store) != saved.size {
            return Err(PutBackError::Layout(format!(
                "table {} has a different size than saved",
                desc.index
            )));
        }
    }

    Ok(())
}

/// Maps the present runs of `image` copy-on-write from its blob file straight into the linear memory
/// `data`, so that resuming costs a few system calls instead of a copy of the whole memory: the pages are
/// read from the page cache only when the guest touches them, and copied only when it writes them.
/// Returns `false` (nothing changed) when the image does not come from a file or a run is not aligned to
/// the OS page size; the caller then copies.
fn map_runs(image: &MemoryImage, data: &mut [u8]) -> bool {
    #[cfg(unix)]
    {
        let Some((file, runs)) = image.file_runs() else {
            return false;
        };
        let page = rustix::param::page_size() as u64;
        let base = data.as_mut_ptr();
        let fits = (base as usize as u64).is_multiple_of(page)
            && runs.iter().all(|run| {
                run.memory_offset.is_multiple_of(page)
                    && run.file_offset.is_multiple_of(page)
                    && run.len.is_multiple_of(page)
                    && run
                        .memory_offset
                        .checked_add(run.len)
                        .is_some_and(|end| end <= data.len() as u64)
            });
        if !fits {
            return false;
        }
        for run in &runs {
            // SAFETY: `base + run.memory_offset .. + run.len` lies inside the linear memory's accessible bytes (checked
            // above), which wasmtime mapped read-write for this instance and which nothing else borrows
            // while `data` is held. MAP_FIXED replaces exactly those pages with a private, read-write,
            // copy-on-write mapping of the blob file: the guest sees the same bytes a copy would have given
            // and its writes never reach the file. wasmtime's on-demand allocator unmaps the whole memory
            // reservation when the instance is dropped (the pooling allocator, which would instead reset
            // pages in place, is not used). Blob files are replaced by rename, never truncated in place,
            // so the mapped pages stay backed.
            let mapped = unsafe {
                rustix::mm::mmap(
                    base.add(run.memory_offset as usize).cast(),
                    run.len as usize,
                    rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                    rustix::mm::MapFlags::PRIVATE | rustix::mm::MapFlags::FIXED,
                    file,
                    run.file_offset,
                )
            };
            if mapped.is_err() {
                // The caller copies every run; over runs already mapped that only writes the same bytes.
                return false;
            }
        }
        true
    }
    #[cfg(not(unix))]
    {
        let _ = (image, data);
        false
    }
}

/// Parses a hex sha256.
fn parse_sha(hex_digest: &str) -> Option<[u8; 32]> {
    hex::decode(hex_digest).ok()?.try_into().ok()
}
