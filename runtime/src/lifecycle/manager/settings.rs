//! A sandbox's settings besides its lifecycle: the volumes it mounts, its network policy, and keeping
//! it alive (E2B's `refreshes`); and destroying a volume, which no sandbox may still mount.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{CreateRequest, LifecycleError, Manager};
use crate::lifecycle::mode::PauseMode;
use crate::lifecycle::network::NetworkPolicy;
use crate::lifecycle::record::{SandboxInfo, SandboxState, now_ms, to_ms};
use crate::lifecycle::volumes::{VolumeError, VolumeMount, Volumes, check_mount_paths};
use crate::wasi::Mount;

impl Manager {
    /// The volumes sandboxes can mount.
    pub fn volumes(&self) -> &Volumes {
        &self.inner.volumes
    }

    /// Checks what a create request asks for beyond its template: its mount paths (normalized in place)
    /// and their volumes, its network policy, and that a filesystem-only pause on timeout is not combined
    /// with auto-resume (traffic cannot wake a sandbox whose memory is gone).
    pub(super) fn check_request(&self, request: &mut CreateRequest) -> Result<(), LifecycleError> {
        if request.lifecycle.auto_resume
            && request.lifecycle.timeout_pause_mode == PauseMode::Filesystem
        {
            return Err(LifecycleError::Conflict(
                "auto-resume cannot be combined with a filesystem-only pause on timeout: a sandbox \
                 without its memory must be resumed explicitly (connect)"
                    .to_owned(),
            ));
        }
        let paths: Vec<String> = request.mounts.iter().map(|m| m.path.clone()).collect();
        for (mount, path) in request.mounts.iter_mut().zip(check_mount_paths(&paths)?) {
            self.inner.volumes.get(&mount.volume_id)?;
            mount.path = path;
        }
        if let Some(network) = &request.network {
            network.validate()?;
        }
        Ok(())
    }

    /// The WASI mounts that show `mounts` to a sandbox's processes.
    pub(super) fn wasi_mounts(&self, mounts: &[VolumeMount]) -> Result<Vec<Mount>, LifecycleError> {
        Ok(mounts
            .iter()
            .map(|m| self.inner.volumes.mount(m))
            .collect::<Result<_, _>>()?)
    }

    /// Destroys volume `id` and its files, unless a sandbox (running or paused) mounts it.
    pub fn destroy_volume(&self, id: &str) -> Result<(), LifecycleError> {
        self.inner.volumes.get(id)?;
        let user = self.inner.catalog.mounting(id);
        if let Some(sandbox) = user {
            return Err(VolumeError::InUse {
                volume: id.to_owned(),
                sandbox,
            }
            .into());
        }
        Ok(self.inner.volumes.destroy(id)?)
    }

    /// Replaces sandbox `id`'s network policy (`None` clears it), running or paused. It is stored and
    /// reported, and a running sandbox's guests are held to it at once (the addresses of `allowOut` and
    /// `denyOut` and `allowInternetAccess`; see [`crate::net::EgressPolicy::from_network_policy`]); a
    /// paused one gets it when it resumes.
    pub fn set_network(
        &self,
        id: &str,
        network: Option<NetworkPolicy>,
    ) -> Result<SandboxInfo, LifecycleError> {
        if let Some(network) = &network {
            network.validate()?;
        }
        let mut slot = self.lock(id)?;
        let mut record = self.record(id)?;
        if let Some(live) = &slot.live {
            live.set_egress_policy(super::egress_of(network.as_ref()));
        }
        record.network = network;
        slot.last_activity = Instant::now();
        let info = record.info();
        self.save(record)?;
        Ok(info)
    }

    /// Keeps running sandbox `id` alive for `duration` from now: its end time moves there unless it is
    /// later already. A paused sandbox is not kept alive ([`LifecycleError::Paused`]): connect to it.
    pub fn refresh(&self, id: &str, duration: Duration) -> Result<SandboxInfo, LifecycleError> {
        let mut slot = self.lock(id)?;
        let mut record = self.record(id)?;
        match record.state {
            SandboxState::Paused => return Err(LifecycleError::Paused(id.to_owned())),
            SandboxState::Lost => return Err(LifecycleError::Lost(id.to_owned())),
            _ => {}
        }
        record.end_at_ms = record
            .end_at_ms
            .max(now_ms().saturating_add(to_ms(duration)));
        slot.last_activity = Instant::now();
        let info = record.info();
        self.save(record)?;
        Ok(info)
    }
}

/// Creates the directory of each mount point in a new sandbox's root, so that listing `/` shows it; what
/// the guest sees there is the volume, whatever the directory holds.
pub(super) fn create_mount_points(fs_dir: &Path, mounts: &[VolumeMount]) -> std::io::Result<()> {
    for mount in mounts {
        std::fs::create_dir_all(fs_dir.join(mount.path.trim_start_matches('/')))?;
    }
    Ok(())
}
