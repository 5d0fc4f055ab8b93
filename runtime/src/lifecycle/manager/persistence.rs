//! What a pause, a resume and a snapshot keep: memory and files (`full`), or files only (`filesystem`,
//! whose sandboxes cold-start their template on the restored files); and the sandbox's own event log,
//! written at every transition.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    Connected, LifecycleError, Manager, SNAPSHOT_PREFIX, SlotGuard, copy_durably, new_id,
    parse_sha, write,
};
use crate::lifecycle::events::{self, Event, Level};
use crate::lifecycle::mode::PauseMode;
use crate::lifecycle::record::{SandboxState, now_ms, to_ms};
use crate::lifecycle::store::{SnapshotInfo, remove_dir_if_present};
use crate::lifecycle::volumes::VolumeMount;
use crate::restore::ResumeOptions;
use crate::sandbox::{Sandbox, SandboxOptions};
use crate::usage::SandboxUsage;

/// How long [`Manager::usage`] waits for a busy sandbox before giving up.
const USAGE_WAIT: Duration = Duration::from_millis(50);

impl Manager {
    /// Pauses a running sandbox keeping what `mode` says: `Ok(true)` if it paused, `Ok(false)` if it was
    /// already paused. A filesystem-only pause writes the files only; the next resume cold-starts the
    /// template on them, and auto-resume does not apply to it.
    pub fn pause_with(&self, id: &str, mode: PauseMode) -> Result<bool, LifecycleError> {
        let mut slot = self.lock(id)?;
        match self.record(id)?.state {
            SandboxState::Paused => Ok(false),
            SandboxState::Lost => Err(LifecycleError::Lost(id.to_owned())),
            _ => {
                self.pause_mode_locked(id, &mut slot, mode)?;
                Ok(true)
            }
        }
    }

    /// Pauses the locked, running sandbox `id` in `mode`, and logs it.
    pub(super) fn pause_mode_locked(
        &self,
        id: &str,
        slot: &mut SlotGuard,
        mode: PauseMode,
    ) -> Result<(), LifecycleError> {
        match mode {
            PauseMode::Full => self.pause_locked(id, slot)?,
            PauseMode::Filesystem => self.pause_files_locked(id, slot)?,
        }
        self.log(
            id,
            Event::now(Level::Info, "paused", "Sandbox paused").with("mode", mode.as_str()),
        );
        Ok(())
    }

    /// A filesystem-only pause: blob first, then the record saying so, as a full pause does.
    fn pause_files_locked(&self, id: &str, slot: &mut SlotGuard) -> Result<(), LifecycleError> {
        self.check_limit(SandboxState::Paused)?;
        let sandbox = slot
            .live
            .as_mut()
            .ok_or_else(|| LifecycleError::Lost(id.to_owned()))?;
        sandbox.pause_files(&self.inner.store.blob_path(id))?;
        slot.live = None;
        let mut record = self.record(id)?;
        record.state = SandboxState::Paused;
        record.pause_mode = PauseMode::Filesystem;
        self.save(record)?;
        remove_dir_if_present(&self.inner.store.fs_dir(id))?;
        Ok(())
    }

    /// [`Manager::connect`], choosing how a paused sandbox comes back: `Full` restores its memory when
    /// its blob has it (E2B's `on_resume="restore"`), `Filesystem` cold-starts its template on its files
    /// whatever the blob holds (`on_resume="reboot"`, `memory: false`). A sandbox paused filesystem-only
    /// always cold-starts. On a running sandbox the mode changes nothing.
    pub fn connect_with(
        &self,
        id: &str,
        timeout: Option<Duration>,
        mode: PauseMode,
    ) -> Result<Connected, LifecycleError> {
        let mut slot = self.lock(id)?;
        let mut record = self.record(id)?;
        match record.state {
            SandboxState::Paused => {
                let cold =
                    record.pause_mode == PauseMode::Filesystem || mode == PauseMode::Filesystem;
                if cold {
                    self.cold_resume_locked(id, &mut slot, timeout)?;
                } else {
                    self.resume_locked(id, &mut slot, timeout)?;
                }
                let how = if cold { "filesystem" } else { "full" };
                self.log(
                    id,
                    Event::now(Level::Info, "resumed", "Sandbox resumed").with("mode", how),
                );
                Ok(Connected {
                    info: self.record(id)?.info(),
                    resumed: true,
                })
            }
            SandboxState::Lost => Err(LifecycleError::Lost(id.to_owned())),
            _ => {
                if let Some(timeout) = timeout {
                    let end = now_ms().saturating_add(to_ms(timeout));
                    if end > record.end_at_ms {
                        record.end_at_ms = end;
                        self.save(record)?;
                    }
                }
                slot.last_activity = Instant::now();
                Ok(Connected {
                    info: self.record(id)?.info(),
                    resumed: false,
                })
            }
        }
    }

    /// Resumes the locked, paused sandbox `id` by cold-starting its template on the files of its blob.
    /// Recorded as running first, then the blob is deleted, as a memory resume does.
    fn cold_resume_locked(
        &self,
        id: &str,
        slot: &mut SlotGuard,
        timeout: Option<Duration>,
    ) -> Result<(), LifecycleError> {
        self.check_limit(SandboxState::Running)?;
        let mut record = self.record(id)?;
        let fs_dir = self.inner.store.fs_dir(id);
        remove_dir_if_present(&fs_dir)?;
        let template = parse_sha(&record.template_sha256)
            .and_then(|sha| self.inner.runtime.template_by_hash(&sha))
            .or_else(|| self.template(&record.template))
            .ok_or_else(|| LifecycleError::UnknownTemplate(record.template.clone()))?;
        let options = SandboxOptions {
            mounts: self.wasi_mounts(&record.mounts)?,
            ..SandboxOptions::default()
        };
        let blob = self.inner.store.blob_path(id);
        let sandbox = match self
            .inner
            .runtime
            .cold_start(&blob, Some(&template), &fs_dir, options)
        {
            Ok(sandbox) => sandbox,
            Err(error) => {
                remove_dir_if_present(&fs_dir)?;
                return Err(error.into());
            }
        };
        if let Some(timeout) = timeout {
            record.timeout_ms = to_ms(timeout);
        }
        let now = now_ms();
        record.state = SandboxState::Running;
        record.pause_mode = PauseMode::Full;
        record.started_at_ms = now;
        record.end_at_ms = now.saturating_add(record.timeout_ms);
        self.save(record)?;
        std::fs::remove_file(blob)?;
        slot.live = Some(sandbox);
        slot.last_activity = Instant::now();
        Ok(())
    }

    /// [`Manager::snapshot`] keeping what `mode` says. A filesystem-only snapshot holds the files only:
    /// sandboxes started from it cold-start the template, and mount the volumes their own request names.
    /// The source keeps running either way.
    pub fn snapshot_with(
        &self,
        id: &str,
        name: Option<String>,
        mode: PauseMode,
    ) -> Result<SnapshotInfo, LifecycleError> {
        let info = match mode {
            PauseMode::Full => self.snapshot(id, name)?,
            PauseMode::Filesystem => self.snapshot_files(id, name)?,
        };
        self.log(
            id,
            Event::now(Level::Info, "snapshot", "Snapshot taken")
                .with("snapshotID", &info.id)
                .with("mode", mode.as_str()),
        );
        Ok(info)
    }

    fn snapshot_files(
        &self,
        id: &str,
        name: Option<String>,
    ) -> Result<SnapshotInfo, LifecycleError> {
        let mut slot = self.lock(id)?;
        let record = self.record(id)?;
        let snapshot_id = new_id(SNAPSHOT_PREFIX);
        let dir = self.inner.store.snapshot_dir(&snapshot_id);
        std::fs::create_dir_all(&dir)?;
        let blob = self.inner.store.snapshot_blob(&snapshot_id);
        let written = match (record.state, slot.live.as_mut()) {
            (SandboxState::Running, Some(sandbox)) => sandbox
                .snapshot_files(&blob)
                .map(|_| ())
                .map_err(LifecycleError::from),
            // A paused sandbox's blob has its files (and perhaps memory, which the snapshot's mode says to
            // ignore): a copy is a filesystem snapshot.
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
            mode: PauseMode::Filesystem,
            mounts: Vec::new(),
        };
        if let Err(error) = self.inner.store.save_snapshot(&info) {
            remove_dir_if_present(&dir)?;
            return Err(error.into());
        }
        write(&self.inner.snapshots).insert(snapshot_id, info.clone());
        Ok(info)
    }

    /// A new sandbox's live part, started from `snapshot` in `fs_dir`: a full snapshot resumes its memory
    /// with its source's volumes (`mounts`, which must then be empty or the same, is set to them); a
    /// filesystem one cold-starts its template with `mounts`.
    pub(super) fn start_from_snapshot(
        &self,
        snapshot: &SnapshotInfo,
        fs_dir: &Path,
        mounts: &mut Vec<VolumeMount>,
    ) -> Result<Sandbox, LifecycleError> {
        let blob = self.inner.store.snapshot_blob(&snapshot.id);
        match snapshot.mode {
            PauseMode::Full => {
                if !mounts.is_empty() && *mounts != snapshot.mounts {
                    return Err(LifecycleError::Conflict(format!(
                        "a sandbox started from the full snapshot {} mounts the volumes its source \
                         mounted; ask for those or none",
                        snapshot.id
                    )));
                }
                mounts.clone_from(&snapshot.mounts);
                let options = ResumeOptions {
                    dir: Some(fs_dir.to_owned()),
                    mounts: self.wasi_mounts(mounts)?,
                    ..ResumeOptions::default()
                };
                Ok(self.inner.runtime.resume(&blob, options)?)
            }
            PauseMode::Filesystem => {
                let options = SandboxOptions {
                    mounts: self.wasi_mounts(mounts)?,
                    ..SandboxOptions::default()
                };
                let sandbox = self
                    .inner
                    .runtime
                    .cold_start(&blob, None, fs_dir, options)?;
                super::settings::create_mount_points(fs_dir, mounts)?;
                Ok(sandbox)
            }
        }
    }

    /// Appends `event` to sandbox `id`'s log (see [`crate::lifecycle::events`]). A log that cannot be
    /// written loses the event, never the operation it describes: it is reported in the server's log.
    pub fn log(&self, id: &str, event: Event) {
        self.event_log(id).append(&event);
    }

    /// Sandbox `id`'s log, to write events into from anywhere.
    pub fn event_log(&self, id: &str) -> events::SandboxLog {
        events::SandboxLog::new(self.inner.store.sandbox_dir(id))
    }

    /// Sandbox `id`'s log, oldest first.
    pub fn events(&self, id: &str) -> Result<Vec<Event>, LifecycleError> {
        self.record(id)?;
        Ok(events::read(&self.inner.store.sandbox_dir(id))?)
    }

    /// The usage account of running sandbox `id` (its memory and CPU time), or `None` when it is not
    /// running or stays busy with another operation for more than a moment.
    pub fn usage(&self, id: &str) -> Option<Arc<SandboxUsage>> {
        let slot = super::read(&self.inner.slots).get(id).cloned()?;
        let slot = slot.try_lock_arc_for(USAGE_WAIT)?;
        slot.live.as_ref().map(Sandbox::usage)
    }

    /// The host directory that is running sandbox `id`'s `/` (it exists only while the sandbox runs).
    pub fn fs_dir(&self, id: &str) -> std::path::PathBuf {
        self.inner.store.fs_dir(id)
    }
}
