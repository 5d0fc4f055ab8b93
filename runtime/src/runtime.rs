//! The [`Runtime`]: one engine, one compiled-module cache, the templates loaded so far, and the defaults every
//! sandbox is created with. Cheap to clone and safe to share between threads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::engine::{EngineConfig, EngineError, StasisEngine};
use crate::limits::SandboxLimits;
use crate::snapshot::DecodeLimits;
use crate::template::{ModuleKind, Template, TemplateError, TemplateInner, check_imports};

/// How a [`Runtime`] is set up.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where the runtime keeps its files: the compiled-module cache (`cache/`) and the directories of
    /// sandboxes created without one of their own (`scratch/`).
    pub data_dir: PathBuf,
    /// Limits of sandboxes that are not given their own.
    pub limits: SandboxLimits,
    /// Bounds applied when reading a blob, whatever the blob claims.
    pub decode_limits: DecodeLimits,
    /// Where compiled modules are cached; `data_dir/cache` when `None`. Runtimes that share one (a test
    /// suite, servers on one machine) compile a large guest such as the Python interpreter only once.
    pub cache_dir: Option<PathBuf>,
    /// How templates are instrumented (by default with the unwind stage, so running calls can be paused).
    pub instrument: crate::instrument::InstrumentOptions,
    /// Whether programs that export a `preinit` handler start from a pre-initialised image (made once per
    /// module, see [`crate::kernel`]'s `preinit`) rather than running their whole start every time. On by
    /// default; off, every program starts fresh (what differential tests compare against).
    pub preinit_programs: bool,
}

impl RuntimeConfig {
    /// A configuration with default limits keeping its files under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            limits: SandboxLimits::default(),
            decode_limits: DecodeLimits::default(),
            cache_dir: None,
            instrument: crate::instrument::InstrumentOptions::default(),
            preinit_programs: true,
        }
    }

    /// The directory of the compiled-module cache: [`RuntimeConfig::cache_dir`] or `data_dir/cache`.
    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("cache"))
    }
}

/// Why a [`Runtime`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The data directory could not be created.
    #[error("could not create the data directory {path}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// The wasm engine could not be set up.
    #[error("could not set up the wasm engine")]
    Engine(#[from] EngineError),
    /// The WASI host could not be registered with the engine.
    #[error("could not link the WASI host")]
    Linker(#[source] wasmtime::Error),
}

/// The embeddable Stasis runtime.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<RuntimeInner>,
}

pub(crate) struct RuntimeInner {
    pub(crate) engine: StasisEngine,
    /// Our WASI host, linked once for every template.
    pub(crate) linker: wasmtime::Linker<crate::process::ProcessData>,
    /// The same host with WasmEdge's `sock_accept` shape in place of preview 1's, for modules importing
    /// that one (see [`crate::wasi::wants_wasmedge_accept`]).
    pub(crate) wasmedge_linker: wasmtime::Linker<crate::process::ProcessData>,
    pub(crate) config: RuntimeConfig,
    /// Templates loaded so far, by the sha256 of their wasm: resuming a blob finds its modules here.
    pub(crate) templates: Mutex<HashMap<[u8; 32], Template>>,
    /// Templates known by name and file but loaded only when first needed (see
    /// [`Runtime::defer_template_file`]), by the sha256 of their wasm.
    pub(crate) deferred: Mutex<HashMap<[u8; 32], (String, PathBuf)>>,
    /// The programs a sandbox's processes can start by name ([`Runtime::register_program`]): the sha256 of
    /// each one's template, loaded or deferred.
    pub(crate) programs: Mutex<std::collections::BTreeMap<String, [u8; 32]>>,
    /// The programs' pre-initialised images, made on first use.
    pub(crate) images: crate::kernel::preinit::ImageCache,
}

impl Runtime {
    /// Starts a runtime: creates the data directory and the engine, with its compiled-module cache under
    /// [`RuntimeConfig::cache_dir`].
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        for dir in [
            config.data_dir.clone(),
            config.cache_dir(),
            config.data_dir.join("scratch"),
        ] {
            std::fs::create_dir_all(&dir).map_err(|source| RuntimeError::DataDir {
                path: dir.clone(),
                source,
            })?;
        }
        let engine = StasisEngine::new(EngineConfig {
            cache_dir: Some(config.cache_dir()),
            ..EngineConfig::default()
        })?;
        let linker = crate::instantiate::linker(&engine).map_err(RuntimeError::Linker)?;
        let wasmedge_linker =
            crate::instantiate::wasmedge_linker(&linker).map_err(RuntimeError::Linker)?;
        Ok(Self {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                wasmedge_linker,
                config,
                templates: Mutex::new(HashMap::new()),
                deferred: Mutex::new(HashMap::new()),
                programs: Mutex::new(std::collections::BTreeMap::new()),
                images: crate::kernel::preinit::ImageCache::default(),
            }),
        })
    }

    /// The runtime's configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// The wasm engine shared by every sandbox of this runtime.
    pub fn engine(&self) -> &StasisEngine {
        &self.inner.engine
    }

    /// Loads a template from wasm bytes: validates and instruments the module, compiles it (or takes it
    /// from the cache), and remembers it so blobs made from it can be resumed. Loading the same bytes again
    /// returns the same template.
    pub fn load_template(&self, name: &str, wasm: &[u8]) -> Result<Template, TemplateError> {
        let sha256: [u8; 32] = Sha256::digest(wasm).into();
        if let Some(existing) = self.templates().get(&sha256).cloned()
            && existing.name() == name
        {
            return Ok(existing);
        }
        let (layout, loaded) = self.instrument_and_compile(&sha256, wasm)?;
        check_imports(&loaded.module)?;
        let linker = if crate::wasi::wants_wasmedge_accept(&loaded.module) {
            &self.inner.wasmedge_linker
        } else {
            &self.inner.linker
        };
        let pre = linker
            .instantiate_pre(&loaded.module)
            .map_err(TemplateError::Link)?;
        let kind = if loaded.module.get_export("_start").is_some() {
            ModuleKind::Command
        } else {
            ModuleKind::Reactor
        };
        let template = Template {
            inner: Arc::new(TemplateInner {
                name: name.to_owned(),
                sha256,
                pre,
                layout,
                kind,
                instrumented_sha256: loaded.sha256,
            }),
        };
        self.templates().insert(sha256, template.clone());
        Ok(template)
    }

    /// Instruments and compiles `wasm` — or, when both the instrumentation's result and the compiled module
    /// are in the cache directory, loads them without running the pass (which takes seconds for a large
    /// interpreter). The cached layout is keyed by the module, the instrumentation options and a fingerprint
    /// of the pass's source, so a changed pass never reuses an old result.
    fn instrument_and_compile(
        &self,
        sha256: &[u8; 32],
        wasm: &[u8],
    ) -> Result<(crate::instrument::Instrumented, crate::engine::LoadedModule), TemplateError> {
        let options = &self.inner.config.instrument;
        let name = format!(
            "{}-{}-{}.layout",
            hex::encode(sha256),
            hex::encode(&Sha256::digest(serde_json::to_vec(options).unwrap_or_default())[..8]),
            env!("STASIS_INSTRUMENT_FINGERPRINT"),
        );
        let engine = &self.inner.engine;
        if let Some(bytes) = engine.read_artifact(&name)
            && let Ok((layout, instrumented)) = bincode::serde::decode_from_slice::<
                (crate::instrument::Instrumented, [u8; 32]),
                _,
            >(&bytes, bincode::config::standard())
            .map(|(v, _)| v)
            && let Some(loaded) = engine.load_cached(&instrumented)
        {
            return Ok((layout, loaded));
        }
        let mut layout = crate::instrument::instrument_with(wasm, options)?;
        let instrumented = std::mem::take(&mut layout.wasm);
        let loaded = engine.load_module(&instrumented)?;
        if let Ok(bytes) =
            bincode::serde::encode_to_vec((&layout, loaded.sha256), bincode::config::standard())
        {
            engine.write_artifact(&name, &bytes);
        }
        Ok((layout, loaded))
    }

    /// Loads a template from a `.wasm` file (see [`Runtime::load_template`]).
    pub fn load_template_file(
        &self,
        name: &str,
        path: impl AsRef<Path>,
    ) -> Result<Template, TemplateError> {
        let path = path.as_ref();
        let wasm = std::fs::read(path).map_err(|source| TemplateError::Read {
            path: path.to_owned(),
            source,
        })?;
        self.load_template(name, &wasm)
    }

    /// The template whose wasm has this sha256: one loaded already, or a deferred one, loaded now. A
    /// deferred template that fails to load is logged and reported as absent; [`Runtime::load_deferred`]
    /// gives its error.
    pub fn template_by_hash(&self, sha256: &[u8; 32]) -> Option<Template> {
        if let Some(loaded) = self.templates().get(sha256).cloned() {
            return Some(loaded);
        }
        match self.load_deferred(sha256) {
            Ok(template) => template,
            Err(error) => {
                tracing::error!(error = ?error, "a deferred template failed to load");
                None
            }
        }
    }

    /// Makes the module in the file at `path` known under `name` without loading it: it is read and
    /// hashed now, but validated, instrumented and compiled only when first needed — when a blob made
    /// from it is resumed ([`Runtime::template_by_hash`]) or [`Runtime::load_deferred`] is called. For
    /// large guests (an interpreter) that a server offers but most sandboxes never use. Returns the
    /// module's sha256.
    pub fn defer_template_file(
        &self,
        name: &str,
        path: impl AsRef<Path>,
    ) -> Result<[u8; 32], TemplateError> {
        let path = path.as_ref();
        let wasm = std::fs::read(path).map_err(|source| TemplateError::Read {
            path: path.to_owned(),
            source,
        })?;
        let sha256: [u8; 32] = Sha256::digest(&wasm).into();
        self.inner
            .deferred
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(sha256, (name.to_owned(), path.to_owned()));
        Ok(sha256)
    }

    /// Loads the deferred template with this sha256 (a no-op returning it when loaded already); `None`
    /// when no template with this hash was loaded or deferred. A file changed since it was deferred is
    /// refused rather than loaded under the old hash.
    pub fn load_deferred(&self, sha256: &[u8; 32]) -> Result<Option<Template>, TemplateError> {
        if let Some(loaded) = self.templates().get(sha256).cloned() {
            return Ok(Some(loaded));
        }
        let Some((name, path)) = self
            .inner
            .deferred
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(sha256)
            .cloned()
        else {
            return Ok(None);
        };
        let wasm = std::fs::read(&path).map_err(|source| TemplateError::Read {
            path: path.clone(),
            source,
        })?;
        if <[u8; 32]>::from(Sha256::digest(&wasm)) != *sha256 {
            return Err(TemplateError::Read {
                path,
                source: std::io::Error::other("the module file changed since it was registered"),
            });
        }
        self.load_template(&name, &wasm).map(Some)
    }

    /// Makes the template whose wasm has `sha256` (loaded, or deferred with
    /// [`Runtime::defer_template_file`]) a program that processes of every sandbox start by `name` — the
    /// shell runs `name ARGS…` as a child process. A command module runs its `_start`; a reactor must
    /// export the `main` handler (see `stasis_guest::program`). Registering a name again replaces it.
    pub fn register_program(&self, name: &str, sha256: [u8; 32]) {
        self.inner
            .programs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(name.to_owned(), sha256);
    }

    /// The names of the registered programs, in order.
    pub fn programs(&self) -> Vec<String> {
        self.inner
            .programs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// The template of program `name`, loading it if it was deferred; `None` when no program has the name
    /// (or its deferred template fails to load, which is logged).
    pub fn program(&self, name: &str) -> Option<Template> {
        let sha256 = *self
            .inner
            .programs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(name)?;
        self.template_by_hash(&sha256)
    }

    /// Makes program `name`'s pre-initialised image now (or reads it from the cache directory), so that its
    /// first start is as fast as the next ones: what a server does for every program when it starts.
    /// Returns whether the program starts from an image — `false` when no program has the name, images are
    /// off ([`RuntimeConfig::preinit_programs`]), the module has no `preinit` handler, or its image could
    /// not be made (logged).
    pub fn prepare_program(&self, name: &str) -> bool {
        self.program(name)
            .is_some_and(|template| self.program_image(&template).is_some())
    }

    /// The image `template`'s children start from, when it has one.
    pub(crate) fn program_image(
        &self,
        template: &Template,
    ) -> Option<Arc<crate::kernel::preinit::ProgramImage>> {
        if !self.inner.config.preinit_programs {
            return None;
        }
        self.inner.images.get(self, template)
    }

    fn templates(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Template>> {
        // A panic while holding this lock cannot leave the map inconsistent (single insert/get), so a
        // poisoned lock is still safe to use.
        self.inner
            .templates
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("data_dir", &self.inner.config.data_dir)
            .finish_non_exhaustive()
    }
}
