//! Examples of embedding Stasis live as `examples/*.rs`; this library only carries what they share: the
//! path of the example guest of `examples/guest`, which `guests/artifacts/build.rs` compiles with every
//! other guest.

/// Path of `notebook.wasm`, the example guest of `examples/guest` compiled for `wasm32-wasip1`.
pub const NOTEBOOK_GUEST: &str = stasis_guests::NOTEBOOK;
