//! The manifest of format 2.1 blobs, written before a sandbox's kernel (its process table and pipes) was
//! saved state, and its conversion to the current one. bincode is not self-describing, so the old
//! manifest is read with the struct it was written with: this is it, frozen. Its processes are the current
//! ones (2.2 and 2.3 only added fd kinds, which a 2.1 blob never holds); a 2.1 sandbox had no children, no
//! pipes and no listening ports.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ProcessState, SandboxManifest, TemplateRef};

/// [`SandboxManifest`] as format 2.1 wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxManifestV2_1 {
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
}

impl From<SandboxManifestV2_1> for SandboxManifest {
    fn from(old: SandboxManifestV2_1) -> Self {
        Self {
            template: old.template,
            env: old.env,
            metadata: old.metadata,
            processes: old.processes,
            paused_at_unix_ms: old.paused_at_unix_ms,
            kernel: Default::default(),
            network: Default::default(),
        }
    }
}
