//! Examples of embedding Stasis live as `examples/*.rs`; this library only carries what they share: the
//! path of the example guest that `build.rs` compiles from `examples/guest`.

/// Path of `notebook.wasm`, the example guest of `examples/guest` compiled for `wasm32-wasip1` by this
/// crate's build script.
pub const NOTEBOOK_GUEST: &str = env!("STASIS_EXAMPLE_GUEST");
