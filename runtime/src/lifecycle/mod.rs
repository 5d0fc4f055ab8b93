//! The sandbox lifecycle: ids, states, the durable store of records, blobs and snapshots, listing with
//! filters and cursors, timeouts — the semantics of the E2B/Novita platforms' sandbox persistence, for
//! embedders and for the server, which only exposes it.

pub(crate) mod catalog;
pub mod events;
pub mod id;
mod index;
mod journal;
mod manager;
pub mod mode;
pub mod network;
pub mod query;
mod reaper;
pub mod record;
pub mod store;
pub mod volumes;

pub use catalog::{IndexReport, MIN_COMPACTION};
pub use events::{Event, Level};
pub use manager::{
    Connected, CreateRequest, DEFAULT_MAX_PAUSED, DEFAULT_MIN_FREE_DISK, LifecycleError, MAX_FORK,
    Manager, ManagerConfig, Page, Recovery, ResumeHook, SKELETON_DIRS, SNAPSHOT_PREFIX, Shutdown,
};
pub use mode::PauseMode;
pub use network::{EgressProxy, NetworkError, NetworkPolicy};
pub use query::{ListQuery, QueryError};
pub use record::{LifecyclePolicy, OnTimeout, SandboxInfo, SandboxRecord, SandboxState};
pub use store::SnapshotInfo;
pub use volumes::{VolumeError, VolumeInfo, VolumeMount, Volumes};
