//! The runtime's integration tests: one binary, one module per area.

mod blob;
mod command;
mod common;
mod containment;
mod cross_process;
mod differential;
mod engine;
mod instrument;
mod javascript;
mod kernel;
mod lifecycle;
mod net;
mod persistence;
mod preinit;
mod programs;
mod proptests;
mod python;
mod sandbox;
mod shell;
mod suspend;
mod unwind;
mod unwind_fuzz;
mod wasi;
