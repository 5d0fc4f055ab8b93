//! Stasis: a WebAssembly sandbox runtime whose sandboxes pause to a blob and resume exactly where they were.

pub mod engine;
pub mod instrument;
pub mod snapshot;
pub mod wasi;
