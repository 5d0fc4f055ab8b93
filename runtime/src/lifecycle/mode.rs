//! What a pause or a snapshot keeps: everything (`full`, the default) or only the sandbox's files
//! (`filesystem`, E2B's `mode="filesystem"` / `memory: false`). A sandbox that comes back from a
//! filesystem-only blob cold-starts its template on the restored files; see [`crate::files_only`].

use serde::{Deserialize, Serialize};

/// What a pause or snapshot keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PauseMode {
    /// Memory, processes and files: a resume continues exactly where the sandbox was.
    #[default]
    Full,
    /// Files only: a resume (or a sandbox started from the snapshot) cold-starts the template.
    Filesystem,
}

impl PauseMode {
    /// The mode as the REST API spells it (`full`, `filesystem`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Filesystem => "filesystem",
        }
    }

    /// The mode of E2B's `memory` flag: `true` keeps memory, `false` keeps files only.
    pub fn from_memory(memory: bool) -> Self {
        if memory { Self::Full } else { Self::Filesystem }
    }

    /// Whether the mode keeps memory.
    pub fn keeps_memory(self) -> bool {
        self == Self::Full
    }
}
