//! Examples of embedding Stasis live as `examples/*.rs`; this library only carries what they share: the
//! paths of the example guests of `examples/guest` and `examples/service`, which `guests/artifacts/build.rs`
//! compiles with every other guest.

/// Path of `notebook.wasm`, the example guest of `examples/guest` compiled for `wasm32-wasip1`.
pub const NOTEBOOK_GUEST: &str = stasis_guests::NOTEBOOK;

/// Path of `service.wasm`, the example service guest of `examples/service` compiled for `wasm32-wasip1`.
pub const SERVICE_GUEST: &str = stasis_guests::SERVICE;
