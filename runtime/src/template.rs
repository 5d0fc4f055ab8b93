//! Templates: validated, instrumented, compiled guest modules, named and addressed by the sha256 of their wasm.
//!
//! Loading a template is the first stage of the pipeline (instrument → compile): the module is checked and
//! re-encoded by [`crate::instrument`] so that every piece of its state is reachable, then compiled through
//! the engine's cache so that the same wasm is never compiled twice, even across restarts.

use std::sync::Arc;

use crate::instrument::{InstrumentError, Instrumented};

/// The WASI import module (the `stasis` module of [`crate::wasi::process`] may be imported too).
pub(crate) const WASI_MODULE: &str = "wasi_snapshot_preview1";

/// How a module is meant to be run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleKind {
    /// Exports `_start`: runs to completion, once, like a program (see [`crate::Sandbox::run`]).
    Command,
    /// Has no `_start`: instantiated once and then called many times (see [`crate::Sandbox::call`]); its
    /// memory and globals are the state a pause keeps.
    Reactor,
}

/// A compiled guest module ready to be instantiated in sandboxes. Cheap to clone.
#[derive(Clone)]
pub struct Template {
    pub(crate) inner: Arc<TemplateInner>,
}

pub(crate) struct TemplateInner {
    pub(crate) name: String,
    pub(crate) sha256: [u8; 32],
    /// The module with its WASI imports already resolved, so instantiating is only allocation.
    pub(crate) pre: wasmtime::InstancePre<crate::process::ProcessData>,
    /// What instrumentation found and exported (the re-encoded bytes themselves are dropped after compiling).
    pub(crate) layout: Instrumented,
    pub(crate) kind: ModuleKind,
    /// The sha256 of the instrumented module: a suspended call's saved frames only mean something to the
    /// module that saved them.
    pub(crate) instrumented_sha256: [u8; 32],
}

impl Template {
    /// The template's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The sha256 of the template's original wasm bytes.
    pub fn sha256(&self) -> [u8; 32] {
        self.inner.sha256
    }

    /// The sha256 of the template's original wasm bytes, in hex.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.inner.sha256)
    }

    /// Whether the module exports a function named `name`.
    pub fn exports_function(&self, name: &str) -> bool {
        self.inner
            .pre
            .module()
            .get_export(name)
            .is_some_and(|ty| ty.func().is_some())
    }

    /// Whether the module is a command or a reactor.
    pub fn kind(&self) -> ModuleKind {
        self.inner.kind
    }

    /// Whether its calls can be paused mid-way (and why not, if they cannot).
    pub fn pausability(&self) -> &crate::instrument::Pausability {
        &self.inner.layout.pausable
    }

    /// What the unwind stage added to the module, if it ran.
    pub fn unwind_layout(&self) -> Option<&crate::instrument::UnwindLayout> {
        self.inner.layout.unwind.as_ref()
    }

    /// The sha256 of the instrumented module, in hex.
    pub fn instrumented_sha256_hex(&self) -> String {
        hex::encode(self.inner.instrumented_sha256)
    }

    /// The plain-data reference to this template stored in blobs.
    pub(crate) fn reference(&self) -> crate::state::TemplateRef {
        crate::state::TemplateRef {
            name: self.inner.name.clone(),
            module_sha256: self.sha256_hex(),
        }
    }
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field("name", &self.inner.name)
            .field("sha256", &self.sha256_hex())
            .field("kind", &self.inner.kind)
            .finish()
    }
}

/// Why a module could not become a template.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The module is invalid or uses something that cannot be captured.
    #[error("the module cannot be instrumented")]
    Instrument(#[from] InstrumentError),
    /// The module could not be compiled.
    #[error("the module could not be compiled")]
    Compile(#[from] crate::engine::CompileError),
    /// The module imports something other than `wasi_snapshot_preview1` functions.
    #[error(
        "the module imports {module}::{name}, but guests may only import {WASI_MODULE} functions"
    )]
    UnsupportedImport {
        /// The import's module name.
        module: String,
        /// The import's field name.
        name: String,
    },
    /// The module's imports could not be resolved against the WASI host.
    #[error("the module's imports cannot be satisfied")]
    Link(#[source] wasmtime::Error),
    /// The template file could not be read.
    #[error("could not read the module file {path}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
}

/// Checks every import of a compiled module against what our WASI host provides.
pub(crate) fn check_imports(module: &wasmtime::Module) -> Result<(), TemplateError> {
    for import in module.imports() {
        let is_func = matches!(import.ty(), wasmtime::ExternType::Func(_));
        let known = import.module() == WASI_MODULE
            || (import.module() == crate::wasi::process::MODULE
                && crate::wasi::process::IMPORTS.contains(&import.name()));
        if !known || !is_func {
            return Err(TemplateError::UnsupportedImport {
                module: import.module().to_owned(),
                name: import.name().to_owned(),
            });
        }
    }
    Ok(())
}
