//! Filesystem-only blobs: a sandbox's files without its memory (what E2B calls a `mode="filesystem"`
//! pause or snapshot). Such a blob is an ordinary blob whose process table is empty, so every reader
//! accepts it; what makes it files-only is that nothing in it needs the sandbox's processes. A sandbox
//! started from one cold-starts its template on the restored files ([`Runtime::cold_start`]), the way a
//! machine boots from a disk: its processes, their variables and open files are gone, the files stay.

use std::path::{Path, PathBuf};

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::capture::{PauseError, PauseReport};
use crate::restore::ResumeError;
use crate::runtime::Runtime;
use crate::sandbox::{CreateError, Sandbox, SandboxOptions};
use crate::snapshot::{ArchiveLimits, DecodedBlob, EncodeOptions, FsArchive, write_blob_atomic};
use crate::state::SandboxManifest;
use crate::template::Template;
use crate::wasi::StopReason;

/// Why a sandbox could not be cold-started from a blob's files.
#[derive(Debug, thiserror::Error)]
pub enum ColdStartError {
    /// The blob could not be read, or its files could not be unpacked.
    #[error("the blob's files could not be restored")]
    Restore(#[from] ResumeError),
    /// The target directory exists and is not empty.
    #[error("the sandbox directory {0} is not empty")]
    DirNotEmpty(PathBuf),
    /// The template's process could not be started on the restored files.
    #[error("the template could not be started on the restored files")]
    Create(#[from] CreateError),
}

impl Sandbox {
    /// Writes the sandbox's files, and nothing of its processes, to `blob` (atomically), and keeps the
    /// sandbox running. Commands keep running too, so a file one of them is writing at that moment may be
    /// captured half-written, as with [`Sandbox::snapshot`].
    pub fn snapshot_files(&mut self, blob: &Path) -> Result<PauseReport, PauseError> {
        if self.paused {
            return Err(PauseError::AlreadyPaused);
        }
        let started = Instant::now();
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
            processes: Vec::new(),
            paused_at_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            kernel: Default::default(),
            network: crate::net::NetworkState {
                egress: self.kernel.network().egress_policy(),
                listeners: Vec::new(),
            },
        };
        let summary = write_blob_atomic(
            blob,
            self.template.sha256(),
            &manifest,
            &[],
            &filesystem,
            &EncodeOptions::default(),
        )?;
        Ok(PauseReport {
            blob_bytes: summary.total_bytes,
            memory_bytes: 0,
            processes: 0,
            suspended: 0,
            elapsed: started.elapsed(),
        })
    }

    /// Pauses the sandbox keeping only its files: running commands are stopped and waited for (so the
    /// files they wrote are complete), the files are written to `blob` as by
    /// [`Sandbox::snapshot_files`], then the processes and the directory are released. On error the
    /// sandbox carries on, without the commands it ran.
    pub fn pause_files(&mut self, blob: &Path) -> Result<PauseReport, PauseError> {
        if !self.paused {
            self.stop_commands(StopReason::Pause);
        }
        let report = self.snapshot_files(blob)?;
        self.processes.clear();
        self.kernel.network().close();
        self.paused = true;
        self.release_dir();
        Ok(report)
    }
}

impl Runtime {
    /// Starts `template` (by default the one whose module the blob names) afresh on the files of `blob`
    /// (any blob: a memory one's processes are ignored),
    /// unpacked into `dir`, which must be missing or empty: the sandbox boots from the blob's disk. Its
    /// environment and metadata are those the blob records; `options` gives the rest (mounts, limits;
    /// its `dir`, `env` and `metadata` are replaced). On error the unpacked files stay, for the caller,
    /// who chose the directory, to remove.
    pub fn cold_start(
        &self,
        blob: &Path,
        template: Option<&Template>,
        dir: &Path,
        mut options: SandboxOptions,
    ) -> Result<Sandbox, ColdStartError> {
        let decoded: DecodedBlob<SandboxManifest> =
            crate::state::read_sandbox_blob(blob, &self.config().decode_limits)
                .map_err(ResumeError::from)?;
        let template = match template {
            Some(template) => template.clone(),
            None => self
                .template_by_hash(&decoded.header.module_sha256)
                .ok_or_else(|| {
                    ResumeError::UnknownModule(hex::encode(decoded.header.module_sha256))
                })?,
        };
        let dir_error = |source| ResumeError::Dir {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(dir_error)?;
        if std::fs::read_dir(dir).map_err(dir_error)?.next().is_some() {
            return Err(ColdStartError::DirNotEmpty(dir.to_owned()));
        }
        decoded
            .filesystem
            .restore_into(dir)
            .map_err(ResumeError::from)?;
        options.dir = Some(dir.to_owned());
        options.env = decoded.manifest.env;
        options.metadata = decoded.manifest.metadata;
        Ok(self.create_sandbox(&template, options)?)
    }
}
