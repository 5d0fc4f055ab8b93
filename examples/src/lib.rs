//! Examples of embedding Stasis live as `examples/*.rs`; this library is empty.
