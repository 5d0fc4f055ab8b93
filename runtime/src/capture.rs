//! Capture: the live state of every process of a sandbox — memories, all mutable globals (also the
//! non-exported ones instrumentation made reachable, such as `__stack_pointer`), table sizes and the WASI
//! state — plus the sandbox's files, written as one blob by [`crate::snapshot`].
//!
//! Memory is never copied on the way: the encoder reads it straight out of the live instances.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::{Memory, Val};

use crate::process::Process;
use crate::sandbox::Sandbox;
use crate::snapshot::{
    ArchiveError, ArchiveLimits, EncodeError, EncodeOptions, FsArchive, MemorySection,
    write_blob_atomic,
};
use crate::state::{
    GlobalState, GlobalValue, MemoryState, ProcessState, SandboxManifest, TableState,
};
use crate::wasi::WasiSaveError;

/// What a pause or snapshot wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseReport {
    /// Size of the blob file in bytes.
    pub blob_bytes: u64,
    /// Bytes of linear memory captured (all processes, all memories, zero pages included).
    pub memory_bytes: u64,
    /// Number of processes captured.
    pub processes: usize,
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
}

impl Sandbox {
    /// Pauses the sandbox: writes every process's state and the sandbox's files to `blob` (atomically:
    /// the file is complete and durable when this returns, or it does not exist), then releases the
    /// processes and the directory. Resume it with [`crate::Runtime::resume`].
    ///
    /// Running commands are stopped first ([`crate::wasi::StopReason::Pause`]) and waited for: a command's
    /// wasm stack cannot be captured, and the files it writes must be complete before they are archived.
    ///
    /// On error nothing else is released: the sandbox carries on (without the commands it ran) as if the
    /// pause had not been asked for.
    pub fn pause(&mut self, blob: &Path) -> Result<PauseReport, PauseError> {
        if !self.paused {
            self.stop_commands(crate::wasi::StopReason::Pause);
        }
        let report = self.snapshot(blob, &EncodeOptions::default())?;
        self.processes.clear();
        self.paused = true;
        self.release_dir();
        Ok(report)
    }

    /// Writes the sandbox's state to `blob` like [`Sandbox::pause`], but keeps it running: the blob is a
    /// snapshot from which any number of new sandboxes can be resumed.
    pub fn snapshot(
        &mut self,
        blob: &Path,
        options: &EncodeOptions,
    ) -> Result<PauseReport, PauseError> {
        if self.paused {
            return Err(PauseError::AlreadyPaused);
        }
        let started = Instant::now();
        let mut states = Vec::with_capacity(self.processes.len());
        let mut memories: Vec<(u32, u32, Memory)> = Vec::new();
        for process in self.processes.values_mut() {
            let (state, handles) = capture_process(process)?;
            memories.extend(
                handles
                    .into_iter()
                    .map(|(index, memory)| (process.pid, index, memory)),
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
        };
        let sections: Vec<MemorySection<'_>> = memories
            .iter()
            .map(|(pid, index, memory)| MemorySection {
                process: *pid,
                memory: *index,
                data: memory.data(&self.processes[pid].store),
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
            elapsed: started.elapsed(),
        })
    }
}

/// Records one process's globals, memory sizes, table sizes and WASI state, and returns handles to its
/// memories (their bytes are read later, by the encoder, without a copy).
fn capture_process(
    process: &mut Process,
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
        .save()
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
    };
    Ok((state, handles))
}
