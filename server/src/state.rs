//! The state every handler shares: the lifecycle manager, the shell template, the API keys, and the secret
//! that envd access tokens are derived from.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use stasis::lifecycle::store::DurableStore;
use stasis::lifecycle::{LifecycleError, Manager, ManagerConfig, Recovery};
use stasis::{Runtime, RuntimeConfig, Template};

use crate::auth::{Caller, constant_time_eq};
use crate::config::{TOKEN_SECRET_FILE, load_or_create_secret};
use crate::guest::{SHELL_TEMPLATE, shell_wasm};
use crate::interpreter::{CODE_INTERPRETER_TEMPLATE, Interpreters, Language};
use crate::metrics::Metrics;
use crate::processes::ProcessTable;
use crate::sampler::Samples;
use crate::templates::Registry;
use crate::watch::Watchers;

/// Why the server state could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The runtime could not start on the data directory.
    #[error("the runtime could not start")]
    Runtime(#[from] stasis::RuntimeError),
    /// The lifecycle manager could not open the data directory, or the shell template could not load.
    #[error("the sandbox manager could not start")]
    Lifecycle(#[from] LifecycleError),
    /// A secret in the data directory could not be read or created.
    #[error("the token secret could not be read or created")]
    Secret(#[from] std::io::Error),
    /// The user templates' directory could not be read or created.
    #[error("the user templates could not be read")]
    Templates(#[source] std::io::Error),
    /// No API key was given.
    #[error("at least one API key is needed")]
    NoApiKey,
    /// An API key is empty (or only whitespace), which an empty header would match.
    #[error("an API key is empty")]
    EmptyApiKey,
}

/// Shared handler state. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    manager: Manager,
    shell: Template,
    interpreters: Interpreters,
    /// Every accepted key with its caller; the first is the primary key.
    api_keys: Vec<(String, Caller)>,
    token_secret: String,
    max_body_bytes: usize,
    metrics: Metrics,
    /// The running commands of every sandbox.
    processes: ProcessTable,
    /// The manager's store, read-only here: where a paused sandbox's blob is, for its size.
    store: DurableStore,
    /// The user templates (`POST /templates`).
    templates: Registry,
    /// Every sandbox's usage samples.
    samples: Samples,
    /// The filesystem watchers of every sandbox.
    watchers: Watchers,
    /// The domain reported to the SDKs and routed by Host ([`crate::proxy`]); set once the listener is
    /// bound, since the default names its port.
    domain: std::sync::RwLock<Option<String>>,
}

impl AppState {
    /// Opens the runtime and the manager on `data_dir`, registers the shell as the `base` template, and
    /// reads (or creates) the token secret. One API key: [`AppState::open_with_keys`] with just it.
    pub fn open(
        data_dir: &Path,
        api_key: String,
        max_body_bytes: usize,
        config: ManagerConfig,
    ) -> Result<(Self, Recovery), OpenError> {
        Self::open_with_keys(data_dir, vec![api_key], max_body_bytes, config)
    }

    /// [`AppState::open`] accepting each of `api_keys`, every key a tenant of its own (see
    /// [`crate::auth`]). Sandboxes and snapshots stored before keys were told apart go to the first key.
    pub fn open_with_keys(
        data_dir: &Path,
        api_keys: Vec<String>,
        max_body_bytes: usize,
        config: ManagerConfig,
    ) -> Result<(Self, Recovery), OpenError> {
        Self::open_runtime(
            RuntimeConfig::new(data_dir),
            api_keys,
            max_body_bytes,
            config,
        )
    }

    /// [`AppState::open_with_keys`] on a runtime configured by `runtime` (its data directory, limits and
    /// compiled-module cache): registers the shell as `base` and as `code-interpreter-v1` and the user
    /// templates stored in the data directory (see [`crate::templates`]), and loads the interpreter
    /// guests, which the first start on a cache compiles (the Python one takes a while).
    pub fn open_runtime(
        runtime: RuntimeConfig,
        api_keys: Vec<String>,
        max_body_bytes: usize,
        config: ManagerConfig,
    ) -> Result<(Self, Recovery), OpenError> {
        let data_dir = runtime.data_dir.clone();
        let data_dir = data_dir.as_path();
        if api_keys.iter().any(|k| k.trim().is_empty()) {
            return Err(OpenError::EmptyApiKey);
        }
        let api_keys: Vec<(String, Caller)> = api_keys
            .into_iter()
            .map(|key| {
                let caller = Caller::for_key(&key);
                (key, caller)
            })
            .collect();
        let primary = api_keys.first().ok_or(OpenError::NoApiKey)?.1.clone();
        let runtime = Runtime::new(runtime)?;
        // Before the manager opens: recovering a paused sandbox may need to find its contexts' modules.
        let interpreters = Interpreters::register(&runtime).map_err(LifecycleError::from)?;
        let templates = Registry::open(data_dir).map_err(OpenError::Templates)?;
        let user_templates = templates.load_all(&runtime).map_err(OpenError::Templates)?;
        let (manager, recovery) = Manager::open(runtime, config)?;
        let adopted = manager.adopt_unowned(primary.owner())?;
        if adopted > 0 {
            tracing::info!(
                adopted,
                "sandboxes and snapshots stored without an owner now belong to the first API key"
            );
        }
        let shell = manager.register_template(SHELL_TEMPLATE, &shell_wasm())?;
        manager.register_template(CODE_INTERPRETER_TEMPLATE, &shell_wasm())?;
        // The programs every sandbox's shell runs by name, besides the command templates.
        let runtime = manager.runtime();
        for name in ["sh", "bash"] {
            runtime.register_program(name, shell.sha256());
        }
        for (name, language) in [
            ("python3", Language::Python),
            ("python", Language::Python),
            ("node", Language::JavaScript),
        ] {
            runtime.register_program(name, interpreters.sha256(language));
        }
        // Loaded into the runtime above already: this only names them for the manager's creates.
        for (name, wasm) in &user_templates {
            manager.register_template(name, wasm)?;
        }
        if !user_templates.is_empty() {
            tracing::info!(count = user_templates.len(), "user templates registered");
        }
        let token_secret = load_or_create_secret(data_dir, TOKEN_SECRET_FILE)?.value;
        let store = DurableStore::open(&manager.runtime().config().data_dir)?;
        let processes = ProcessTable::default();
        // Commands and cells a pause suspended continue when their sandbox resumes.
        let table = processes.clone();
        let logs = store.clone();
        manager.set_resume_hook(Arc::new(move |id, sandbox| {
            let log = stasis::lifecycle::events::SandboxLog::new(logs.sandbox_dir(id));
            crate::api::envd::process::continue_suspended(&table, id, sandbox, &log)
        }));
        let inner = Inner {
            manager,
            shell,
            interpreters,
            api_keys,
            token_secret,
            max_body_bytes,
            metrics: Metrics::new(),
            processes,
            store,
            templates,
            samples: Samples::default(),
            watchers: Watchers::default(),
            domain: std::sync::RwLock::new(None),
        };
        let inner = Arc::new(inner);
        start_sampler(Arc::downgrade(&inner));
        Ok((Self { inner }, recovery))
    }

    /// Sets the domain that create and connect report, and that sandbox hosts (`8000-<id>.<domain>`)
    /// are recognized under.
    pub fn set_domain(&self, domain: impl Into<String>) {
        let domain = domain.into();
        // A poisoned lock held only a string: the new value replaces it whole.
        match self.inner.domain.write() {
            Ok(mut slot) => *slot = Some(domain),
            Err(poisoned) => *poisoned.into_inner() = Some(domain),
        }
    }

    /// The domain reported to the SDKs, once one is set ([`AppState::set_domain`]).
    pub fn domain(&self) -> Option<String> {
        match self.inner.domain.read() {
            Ok(slot) => slot.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The lifecycle manager.
    pub fn manager(&self) -> &Manager {
        &self.inner.manager
    }

    /// The code interpreter's guests.
    pub fn interpreters(&self) -> &Interpreters {
        &self.inner.interpreters
    }

    /// The template that runs command lines.
    pub fn shell(&self) -> &Template {
        &self.inner.shell
    }

    /// The user templates.
    pub fn templates(&self) -> &Registry {
        &self.inner.templates
    }

    /// The primary API key (the first one given).
    pub fn api_key(&self) -> &str {
        self.inner
            .api_keys
            .first()
            .map_or("", |(key, _)| key.as_str())
    }

    /// The caller whose key `presented` is, if it is one of the keys. Every key is compared, in time
    /// independent of where they differ, so timing tells nothing about which key came close.
    pub fn authenticate(&self, presented: &str) -> Option<Caller> {
        let mut found = None;
        for (key, caller) in &self.inner.api_keys {
            if constant_time_eq(presented.as_bytes(), key.as_bytes()) && found.is_none() {
                found = Some(caller.clone());
            }
        }
        found
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The running commands of every sandbox.
    pub fn processes(&self) -> &ProcessTable {
        &self.inner.processes
    }

    /// Where the blob of paused sandbox `id` is.
    pub fn blob_path(&self, id: &str) -> PathBuf {
        self.inner.store.blob_path(id)
    }

    /// Every sandbox's usage samples.
    pub fn samples(&self) -> &Samples {
        &self.inner.samples
    }

    /// The filesystem watchers of every sandbox.
    pub fn watchers(&self) -> &Watchers {
        &self.inner.watchers
    }

    /// The token of volume `id` (what the volume file API wants as `Authorization: Bearer`), derived
    /// like the access tokens, with a domain tag of its own so no sandbox token is a volume token.
    pub fn volume_token(&self, id: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.inner.token_secret.as_bytes());
        hasher.update(b"\0volume\0");
        hasher.update(id.as_bytes());
        hex::encode(hasher.finalize())
    }

    /// Largest accepted request body.
    pub fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes
    }

    /// The envd access token of sandbox `id`. Derived from a server secret rather than stored, so every
    /// sandbox has one whichever way it came to be (create, fork, a restart of the server) and nothing is
    /// left behind when it is killed; without the secret it cannot be guessed from the id.
    pub fn access_token(&self, id: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.inner.token_secret.as_bytes());
        hasher.update([0]);
        hasher.update(id.as_bytes());
        hex::encode(hasher.finalize())
    }
}

/// Samples every running sandbox at the state's interval, on a thread of its own, until the state is
/// dropped (the thread holds it only while it samples).
fn start_sampler(state: std::sync::Weak<Inner>) {
    let spawned = std::thread::Builder::new()
        .name("stasis-sampler".into())
        .spawn(move || {
            loop {
                let Some(inner) = state.upgrade() else { return };
                let interval = inner.samples.interval();
                drop(inner);
                std::thread::sleep(interval);
                let Some(inner) = state.upgrade() else { return };
                crate::sampler::sample_all(&AppState { inner });
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "the metrics sampler could not start; sandboxes report no metrics");
    }
}
