//! What the lifecycle knows about a sandbox, as plain data: kept in memory, written to the durable store
//! on every transition, and turned into the public [`SandboxInfo`] view.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::mode::PauseMode;
use super::network::NetworkPolicy;
use super::volumes::VolumeMount;

/// Where a sandbox is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    /// Live processes in memory; calls and commands run.
    Running,
    /// Being written to its blob; operations wait for the pause to finish.
    Pausing,
    /// Its whole state is in a blob on disk; it holds no memory.
    Paused,
    /// Being restored from its blob.
    Resuming,
    /// It was running when the server stopped without pausing it (a crash): its in-memory state is gone.
    /// Reported, never silently dropped; only `kill` applies.
    Lost,
}

impl SandboxState {
    /// The state's name as the REST API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Pausing => "pausing",
            Self::Paused => "paused",
            Self::Resuming => "resuming",
            Self::Lost => "lost",
        }
    }
}

/// What happens when a sandbox's time is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    /// Kill it, deleting everything (the E2B/Novita default).
    #[default]
    Kill,
    /// Pause it, keeping everything it wrote.
    Pause,
}

/// A sandbox's lifecycle policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LifecyclePolicy {
    /// What the timeout does.
    pub on_timeout: OnTimeout,
    /// Whether an operation on the sandbox while it is paused resumes it first.
    pub auto_resume: bool,
    /// Apply `on_timeout` after this long without any operation on the sandbox, even before its end time.
    pub idle_timeout: Option<Duration>,
    /// What a pause on timeout keeps (E2B's `on_timeout: {"action": "pause", "mode": …}`); a
    /// filesystem-only one cannot be combined with `auto_resume`.
    #[serde(default)]
    pub timeout_pause_mode: PauseMode,
}

/// The durable record of one sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// The sandbox's id.
    pub id: String,
    /// Name of the template it was created from.
    pub template: String,
    /// Hex sha256 of that template's module.
    pub template_sha256: String,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
    /// Environment variables of its processes.
    pub envs: BTreeMap<String, String>,
    /// When it was created (ms since the Unix epoch).
    pub created_at_ms: u64,
    /// When it last started running: creation or the latest resume (ms since the Unix epoch).
    pub started_at_ms: u64,
    /// When its timeout applies, if it is running (ms since the Unix epoch).
    pub end_at_ms: u64,
    /// Its timeout: how long it runs after creation or a resume unless extended.
    pub timeout_ms: u64,
    /// Its state.
    pub state: SandboxState,
    /// Its lifecycle policy.
    pub lifecycle: LifecyclePolicy,
    /// A counter that orders sandboxes created in the same millisecond, for stable pagination.
    pub sequence: u64,
    /// Who owns it: an opaque identifier an embedder chooses (the server stores a digest of the API key
    /// that created it, never the key). `None` for records written before owners existed, and for
    /// embedders that do not use them; [`Manager::adopt_unowned`](super::Manager::adopt_unowned) gives
    /// those an owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The volumes it mounts, kept so a resume mounts them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<VolumeMount>,
    /// While it is paused: what its blob holds (a filesystem-only blob cold-starts the template on
    /// resume). Reset to `full` when it runs again.
    #[serde(default)]
    pub pause_mode: PauseMode,
    /// Its network policy, as set at creation or by `PUT /sandboxes/{id}/network`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkPolicy>,
}

/// The public view of a sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxInfo {
    /// The sandbox's id.
    pub id: String,
    /// Name of the template it was created from.
    pub template: String,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
    /// Environment variables.
    pub envs: BTreeMap<String, String>,
    /// When it was created.
    pub created_at: SystemTime,
    /// When it last started running.
    pub started_at: SystemTime,
    /// When its timeout applies.
    pub end_at: SystemTime,
    /// Its state.
    pub state: SandboxState,
    /// Its lifecycle policy.
    pub lifecycle: LifecyclePolicy,
    /// Who owns it (see [`SandboxRecord::owner`]).
    pub owner: Option<String>,
    /// The volumes it mounts.
    pub mounts: Vec<VolumeMount>,
    /// What its blob holds while it is paused (`None` when it is not paused).
    pub pause_mode: Option<PauseMode>,
    /// Its network policy.
    pub network: Option<NetworkPolicy>,
}

impl SandboxRecord {
    /// The public view of this record.
    pub fn info(&self) -> SandboxInfo {
        SandboxInfo {
            id: self.id.clone(),
            template: self.template.clone(),
            metadata: self.metadata.clone(),
            envs: self.envs.clone(),
            created_at: from_ms(self.created_at_ms),
            started_at: from_ms(self.started_at_ms),
            end_at: from_ms(self.end_at_ms),
            state: self.state,
            lifecycle: self.lifecycle,
            owner: self.owner.clone(),
            mounts: self.mounts.clone(),
            pause_mode: (self.state == SandboxState::Paused).then_some(self.pause_mode),
            network: self.network.clone(),
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A time from milliseconds since the Unix epoch.
pub fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A duration in whole milliseconds, saturating.
pub fn to_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
