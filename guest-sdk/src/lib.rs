//! The guest side of the Stasis reactor ABI (being written).
