//! Capture: the live state of every process of a sandbox — memories, all mutable globals (also the
//! non-exported ones instrumentation made reachable, such as `__stack_pointer`), table sizes and the WASI
//! state — plus the sandbox's files, written as one blob by [`crate::snapshot`].
//!
//! Memory is never copied on the way: the encoder reads it straight out of the live instances. Running
//! processes are first suspended (see [`Sandbox::pause`]): their stacks are then memory and globals too.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::{Memory, Val};

use crate::process::Process;
use crate::running::{Control, Waited};
use crate::sandbox::{Entry, Sandbox};
use crate::snapshot::{
    ArchiveError, ArchiveLimits, EncodeError, EncodeOptions, FsArchive, MemorySection,
    write_blob_atomic,
};
use crate::state::ProcessKind;
use crate::state::{
    GlobalState, GlobalValue, MemoryState, ProcessState, SandboxManifest, TableState,
};
use crate::state::{KernelState, PipeSaved};
use crate::wasi::StopReason;
use crate::wasi::{SaveLinks, WasiSaveError};

/// What a pause or snapshot wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseReport {
    /// Size of the blob file in bytes.
    pub blob_bytes: u64,
    /// Bytes of linear memory captured (all processes, all memories, zero pages included).
    pub memory_bytes: u64,
    /// Number of processes captured.
    pub processes: usize,
    /// How many of them were suspended in a call (they continue after the resume).
    pub suspended: usize,
    /// Wall time from the start of the capture to the blob being durable on disk.
    pub elapsed: Duration,
}

/// Why a sandbox could not be paused or snapshotted. The sandbox keeps running, untouched.
#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    /// The sandbox is already paused.
    #[error("the sandbox is already paused")]
    AlreadyPaused,
    /// A process's module lacks an export instrumentation should have added (a corrupted template).
    #[error("process {pid} lacks the instrumented export {name}")]
    MissingExport {
        /// The process.
        pid: u32,
        /// The missing export.
        name: String,
    },
    /// A global holds a value that cannot be saved (a reference).
    #[error("process {pid}'s global {index} holds a value that cannot be saved")]
    UnsavableGlobal {
        /// The process.
        pid: u32,
        /// The global's index.
        index: u32,
    },
    /// A process's WASI state cannot be saved (e.g. it holds a file that was deleted while open).
    #[error("process {pid}'s WASI state cannot be saved")]
    Wasi {
        /// The process.
        pid: u32,
        /// Why.
        #[source]
        source: WasiSaveError,
    },
    /// The sandbox's files could not be archived (e.g. an unsupported file type).
    #[error("the sandbox's files could not be archived")]
    Archive(#[from] ArchiveError),
    /// The blob could not be written.
    #[error("the blob could not be written")]
    Encode(#[from] EncodeError),
    /// A process was running a call that could not be suspended in time, so its state could not be read.
    #[error(
        "process {0} is running a call that could not be suspended; try again when it has finished"
    )]
    Busy(u32),
}

/// Processes a pause or snapshot took from their threads, unwound, to capture.
struct Taken {
    items: Vec<(Control, Box<Process>)>,
}

impl Taken {
    /// Hands every process back to its thread, to be rewound in place (after a snapshot, or a failed pause).
    fn resume(self) {
        for (control, process) in self.items {
            control.resume(process);
        }
    }

    /// Keeps every process: their runs end as suspended (after a durable pause).
    fn release(self) {
        for (control, _process) in self.items {
            control.release();
        }
    }
}

impl Sandbox {
    /// Pauses the sandbox: writes every process's state and the sandbox's files to `blob` (atomically:
    /// the file is complete and durable when this returns, or it does not exist), then releases the
    /// processes and the directory. Resume it with [`crate::Runtime::resume`].
    ///
    /// Running processes — commands, and handler calls started with [`Sandbox::start_call`] — are
    /// suspended first when their module can be paused mid-call: each unwinds at its next unwind point
    /// (within [`crate::SandboxLimits::suspend_deadline`]), its stack goes into the blob with everything
    /// else, and its run ends as suspended; after the resume it continues where it was
    /// ([`Sandbox::continue_command`], [`Sandbox::continue_call`]). A command that cannot be suspended is
    /// ended ([`crate::wasi::StopReason::Pause`]), and a handler call that cannot is waited for, then ended.
    ///
    /// On error nothing else is released: the sandbox carries on — suspended processes rewound in place —
    /// as if the pause had not been asked for.
    pub fn pause(&mut self, blob: &Path) -> Result<PauseReport, PauseError> {
        if self.paused {
            return Err(PauseError::AlreadyPaused);
        }
        let mut taken = self.suspend_running(true)?;
        match self.write_blob(blob, &mut taken, &EncodeOptions::default()) {
            Ok(report) => {
                taken.release();
                self.processes.clear();
                // Listeners went with the processes' fds; a client connecting now learns the sandbox is
                // paused rather than that nothing listens.
                self.kernel.network().close();
                self.paused = true;
                self.release_dir();
                Ok(report)
            }
            Err(error) => {
                taken.resume();
                Err(error)
            }
        }
    }

    /// Writes the sandbox's state to `blob` like [`Sandbox::pause`], but keeps it running: the blob is a
    /// snapshot from which any number of new sandboxes can be resumed. Running processes that can be
    /// suspended are, for the capture, and rewound in place at once: every sandbox resumed from the
    /// snapshot starts with them running too. A running command that cannot be suspended keeps running and
    /// is not in the snapshot.
    pub fn snapshot(
        &mut self,
        blob: &Path,
        options: &EncodeOptions,
    ) -> Result<PauseReport, PauseError> {
        if self.paused {
            return Err(PauseError::AlreadyPaused);
        }
        let mut taken = self.suspend_running(false)?;
        let result = self.write_blob(blob, &mut taken, options);
        taken.resume();
        result
    }

    /// Asks every running process to suspend and takes those that unwind. `for_pause`: processes that
    /// cannot be suspended are ended (commands at once, handler calls after the deadline); otherwise
    /// commands that cannot keep running, and a handler call that cannot is an error.
    fn suspend_running(&mut self, for_pause: bool) -> Result<Taken, PauseError> {
        self.suspend_all_but(for_pause, &[])
    }

    /// [`Sandbox::suspend_running`] for the running processes not in `skip` (taken already).
    fn suspend_all_but(&mut self, for_pause: bool, skip: &[u32]) -> Result<Taken, PauseError> {
        self.reap();
        let running: Vec<(u32, Control)> = self
            .processes
            .iter()
            .filter(|(pid, _)| !skip.contains(pid))
            .filter_map(|(&pid, e)| match e {
                Entry::Running(c) => Some((pid, c.clone())),
                Entry::Held(_) => None,
            })
            .collect();
        for (_, control) in &running {
            if control.suspendable() {
                control.request_suspend();
            } else if for_pause && control.kind() == ProcessKind::Command {
                control.stop(StopReason::Pause);
            }
        }
        let deadline = Instant::now() + self.limits.suspend_deadline;
        let mut taken = Taken { items: Vec::new() };
        let mut failure = None;
        for (pid, control) in running {
            if !for_pause && !control.suspendable() && control.kind() == ProcessKind::Command {
                continue;
            }
            let mut waited = control.wait_parked(deadline);
            if let Waited::TimedOut = waited {
                if !for_pause {
                    control.clear_suspend();
                    failure.get_or_insert(PauseError::Busy(pid));
                    continue;
                }
                // It did not unwind in time (a long host call, a module that cannot unwind): it ends.
                tracing::warn!(pid, "a process did not suspend in time and is stopped");
                control.stop(StopReason::Pause);
                waited = control.wait_parked(Instant::now() + STOP_WAIT);
            }
            control.clear_suspend();
            match waited {
                Waited::Parked(process) => taken.items.push((control, process)),
                Waited::Finished(Some(process)) => {
                    self.processes.insert(pid, Entry::Held(process));
                }
                Waited::Finished(None) => {
                    self.processes.remove(&pid);
                }
                Waited::TimedOut => {
                    failure.get_or_insert(PauseError::Busy(pid));
                }
            }
        }
        if failure.is_none() && !self.kernel_quiet(&taken, skip) {
            // A process started a child after the others were asked to suspend, and before it was
            // itself: that child is suspended (or ended) like the rest, round after round — a parked
            // process starts nothing, so the rounds end.
            let mut done: Vec<u32> = skip.to_vec();
            done.extend(taken.items.iter().map(|(c, _)| c.pid()));
            match self.suspend_all_but(for_pause, &done) {
                Ok(more) => taken.items.extend(more.items),
                Err(error) => failure = Some(error),
            }
        }
        match failure {
            None => Ok(taken),
            Some(error) => {
                taken.resume();
                Err(error)
            }
        }
    }

    /// Whether no process runs any more besides those `taken` and those in `skip` (children that started
    /// late count; commands that cannot be suspended do not).
    fn kernel_quiet(&mut self, taken: &Taken, skip: &[u32]) -> bool {
        self.reap();
        self.processes.iter().all(|(pid, e)| match e {
            Entry::Running(c) => {
                skip.contains(pid)
                    || taken.items.iter().any(|(t, _)| t.pid() == *pid)
                    || (!c.suspendable() && c.kind() == ProcessKind::Command)
            }
            Entry::Held(_) => true,
        })
    }

    /// Captures every process — held ones and the `taken` ones — and the files into `blob`.
    fn write_blob(
        &mut self,
        blob: &Path,
        taken: &mut Taken,
        options: &EncodeOptions,
    ) -> Result<PauseReport, PauseError> {
        let started = Instant::now();
        let mut all: Vec<&mut Process> = self
            .processes
            .values_mut()
            .filter_map(|e| match e {
                Entry::Held(p) => Some(&mut **p),
                Entry::Running(_) => None,
            })
            .chain(taken.items.iter_mut().map(|(_, p)| &mut **p))
            .collect();
        all.sort_by_key(|p| p.pid);
        // Streams a parent handed down are saved as the parent's, pipes by id with their bytes.
        let mut links = SaveLinks::default();
        let mut pipes = std::collections::BTreeMap::new();
        let mut listeners = std::collections::BTreeMap::new();
        for process in &all {
            let wasi = &process.store.data().wasi;
            links.add(process.pid, wasi);
            wasi.pipes_into(&mut pipes);
            wasi.listeners_into(&mut listeners);
        }
        let mut states = Vec::with_capacity(all.len());
        let mut memories: Vec<(usize, u32, Memory)> = Vec::new();
        for (i, process) in all.iter_mut().enumerate() {
            let (state, handles) = capture_process(process, &links)?;
            memories.extend(
                handles
                    .into_iter()
                    .map(|(index, memory)| (i, index, memory)),
            );
            states.push(state);
        }
        let archive_limits = ArchiveLimits {
            max_total_bytes: self.limits.max_disk_bytes,
            max_entries: self.limits.max_files,
            ..ArchiveLimits::default()
        };
        let filesystem = FsArchive::capture(&self.dir, &archive_limits)?;
        let manifest = SandboxManifest {
            template: self.template.reference(),
            env: self.env.clone(),
            metadata: self.metadata.clone(),
            processes: states,
            paused_at_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            kernel: KernelState {
                children: self.kernel.save(),
                pipes: pipes
                    .into_iter()
                    .map(|(id, bytes)| PipeSaved { id, bytes })
                    .collect(),
            },
            network: crate::net::NetworkState {
                egress: self.kernel.network().egress_policy(),
                listeners: listeners.into_values().collect(),
            },
        };
        let sections: Vec<MemorySection<'_>> = memories
            .iter()
            .map(|(i, index, memory)| MemorySection {
                process: all[*i].pid,
                memory: *index,
                data: memory.data(&all[*i].store),
            })
            .collect();
        let memory_bytes = sections.iter().map(|s| s.data.len() as u64).sum();
        let summary = write_blob_atomic(
            blob,
            self.template.sha256(),
            &manifest,
            &sections,
            &filesystem,
            options,
        )?;
        Ok(PauseReport {
            blob_bytes: summary.total_bytes,
            memory_bytes,
            processes: manifest.processes.len(),
            suspended: manifest
                .processes
                .iter()
                .filter(|p| p.suspended.is_some())
                .count(),
            elapsed: started.elapsed(),
        })
    }
}

/// How long a process that was asked to stop is waited for.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Records one process's globals, memory sizes, table sizes and WASI state, and returns handles to its
/// memories (their bytes are read later, by the encoder, without a copy).
pub(crate) fn capture_process(
    process: &mut Process,
    links: &SaveLinks,
) -> Result<(ProcessState, Vec<(u32, Memory)>), PauseError> {
    let pid = process.pid;
    let layout = &process.template.inner.layout;
    let missing = |name: &str| PauseError::MissingExport {
        pid,
        name: name.to_owned(),
    };

    let mut globals = Vec::with_capacity(layout.globals.len());
    for desc in &layout.globals {
        let global = process
            .instance
            .get_global(&mut process.store, &desc.export_name)
            .ok_or_else(|| missing(&desc.export_name))?;
        let value = match global.get(&mut process.store) {
            Val::I32(v) => GlobalValue::I32(v),
            Val::I64(v) => GlobalValue::I64(v),
            Val::F32(bits) => GlobalValue::F32(bits),
            Val::F64(bits) => GlobalValue::F64(bits),
            Val::V128(v) => GlobalValue::V128(v.as_u128()),
            _ => {
                return Err(PauseError::UnsavableGlobal {
                    pid,
                    index: desc.index,
                });
            }
        };
        globals.push(GlobalState {
            index: desc.index,
            value,
        });
    }

    let mut memories = Vec::with_capacity(layout.memories.len());
    let mut handles = Vec::with_capacity(layout.memories.len());
    for desc in &layout.memories {
        let memory = process
            .instance
            .get_memory(&mut process.store, &desc.export_name)
            .ok_or_else(|| missing(&desc.export_name))?;
        memories.push(MemoryState {
            index: desc.index,
            pages: memory.size(&process.store),
        });
        handles.push((desc.index, memory));
    }

    let mut tables = Vec::with_capacity(layout.tables.len());
    for desc in &layout.tables {
        let table = process
            .instance
            .get_table(&mut process.store, &desc.export_name)
            .ok_or_else(|| missing(&desc.export_name))?;
        tables.push(TableState {
            index: desc.index,
            size: table.size(&process.store),
        });
    }

    let wasi = process
        .store
        .data()
        .wasi
        .save_linked(links)
        .map_err(|source| PauseError::Wasi { pid, source })?;
    let state = ProcessState {
        pid,
        module: process.template.reference(),
        globals,
        memories,
        tables,
        wasi,
        poisoned: process.poisoned,
        label: process.label.clone(),
        kind: process.kind,
        instrumented_sha256: hex::encode(process.template.inner.instrumented_sha256),
        suspended: process.suspended.clone(),
    };
    Ok((state, handles))
}
