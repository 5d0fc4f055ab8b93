//! The manifest of format 2.2 blobs, written before a sandbox's network (its listening ports and egress
//! policy) was saved state, and its conversion to the current one. bincode is not self-describing, so the
//! old manifest is read with the struct it was written with: this is it, frozen. Its processes and kernel
//! are the current ones (2.3 only added an fd kind, sockets, which a 2.2 blob never holds); a 2.2 sandbox
//! listened on no port and had the default egress policy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{KernelState, ProcessState, SandboxManifest, TemplateRef};

/// [`SandboxManifest`] as format 2.2 wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxManifestV2_2 {
    /// The template the sandbox was created from.
    pub template: TemplateRef,
    /// Environment of its processes.
    pub env: Vec<(String, String)>,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
    /// Every live process.
    pub processes: Vec<ProcessState>,
    /// Wall-clock time of the pause, in milliseconds since the Unix epoch.
    pub paused_at_unix_ms: u64,
    /// The kernel: which processes started which, and the pipes between them.
    pub kernel: KernelState,
}

impl From<SandboxManifestV2_2> for SandboxManifest {
    fn from(old: SandboxManifestV2_2) -> Self {
        Self {
            template: old.template,
            env: old.env,
            metadata: old.metadata,
            processes: old.processes,
            paused_at_unix_ms: old.paused_at_unix_ms,
            kernel: old.kernel,
            network: Default::default(),
        }
    }
}
