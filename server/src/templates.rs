//! User templates: wasm modules registered at run time (`POST /templates`) next to the built-in ones.
//!
//! A registered module is kept as `DATA_DIR/templates/NAME.wasm`, written atomically, and every such file
//! is loaded again when the server opens its data directory, before the manager recovers anything, so
//! sandboxes, paused blobs and snapshots of a user template survive a restart. Templates are server-wide,
//! not per API key: a name, once taken, names one module for every tenant, and it cannot be replaced
//! (a sandbox's record and blob name their template, and a different module under that name would
//! resume them wrongly). One module has one name too, because the runtime finds a blob's template by the
//! sha256 of its module, and two names for the same bytes would make that lookup ambiguous.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use stasis::lifecycle::store::write_atomic;
use stasis::lifecycle::{LifecycleError, Manager};
use stasis::{Runtime, Template, TemplateError};

use crate::guest::SHELL_TEMPLATE;
use crate::interpreter::CODE_INTERPRETER_TEMPLATE;

/// The directory of the data directory that holds the user templates' modules.
pub const TEMPLATES_DIR: &str = "templates";

/// The templates every server registers itself; a user module cannot take their names.
pub const BUILT_IN_TEMPLATES: [&str; 2] = [SHELL_TEMPLATE, CODE_INTERPRETER_TEMPLATE];

/// Longest template name.
pub const MAX_NAME_LEN: usize = 63;

/// Whether `name` may name a user template: `^[a-z0-9][a-z0-9._-]{0,62}$`, so it is also a safe file
/// name and a plain word on a command line.
pub fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let plain = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match bytes.split_first() {
        Some((first, rest)) => {
            plain(first)
                && rest.len() < MAX_NAME_LEN
                && rest.iter().all(|b| plain(b) || b"._-".contains(b))
        }
        None => false,
    }
}

/// Whether `name` is one of the [`BUILT_IN_TEMPLATES`].
pub fn is_built_in(name: &str) -> bool {
    BUILT_IN_TEMPLATES.contains(&name)
}

/// Why a module could not be registered as a template.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The name does not match `^[a-z0-9][a-z0-9._-]{0,62}$`.
    #[error(
        "invalid template name {0:?}: it must be 1 to 63 characters of a-z, 0-9, '.', '_' or '-', \
         starting with a letter or a digit"
    )]
    InvalidName(String),
    /// The name is a built-in template's.
    #[error("{0} is a built-in template")]
    Reserved(String),
    /// The name is registered already, with a different module.
    #[error("the template {0} is already registered with a different module")]
    Taken(String),
    /// The module is registered already, under another name.
    #[error("this module is already registered as the template {0}")]
    DuplicateModule(String),
    /// The runtime refuses the module (invalid wasm, an unsupported import, …).
    #[error("the module cannot be a template")]
    Module(#[source] TemplateError),
    /// The module could not be written to the data directory.
    #[error("the template's module could not be stored")]
    Store(#[source] std::io::Error),
    /// The manager could not register the loaded module.
    #[error("the template could not be registered")]
    Register(#[source] LifecycleError),
}

/// How a registration went.
#[derive(Debug, Clone)]
pub enum Registered {
    /// The template is new.
    Created(Template),
    /// The same module was registered under this name already; nothing changed.
    Existing(Template),
}

impl Registered {
    /// The template, new or not.
    pub fn template(&self) -> &Template {
        match self {
            Self::Created(template) | Self::Existing(template) => template,
        }
    }
}

/// The user templates of a data directory.
#[derive(Debug)]
pub struct Registry {
    dir: PathBuf,
    /// Held across a registration's check, compilation and write, so two registrations of one name (or
    /// one module) cannot both pass the checks.
    lock: Mutex<()>,
}

impl Registry {
    /// The registry of `data_dir`, its directory created if missing.
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join(TEMPLATES_DIR);
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            lock: Mutex::new(()),
        })
    }

    /// Reads every stored module and loads it into `runtime`, so blobs made from it resume; returns the
    /// loaded ones as `(name, wasm)` for [`Manager::register_template`] once the manager is open. A file
    /// that cannot be read or loaded is logged and skipped: the server still starts, and only sandboxes
    /// of that template fail (with their own errors). Files with other names (a temporary file left by a
    /// crash mid-write) are ignored.
    pub fn load_all(&self, runtime: &Runtime) -> std::io::Result<Vec<(String, Vec<u8>)>> {
        let mut loaded = Vec::new();
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        paths.sort();
        for path in paths {
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".wasm"))
                .filter(|n| valid_name(n) && !is_built_in(n))
            else {
                continue;
            };
            let wasm = match std::fs::read(&path) {
                Ok(wasm) => wasm,
                Err(error) => {
                    tracing::error!(template = name, error = %error, "a stored template cannot be read");
                    continue;
                }
            };
            if let Err(error) = runtime.load_template(name, &wasm) {
                let error = crate::error::chain(&error);
                tracing::error!(template = name, error, "a stored template does not load");
                continue;
            }
            loaded.push((name.to_owned(), wasm));
        }
        Ok(loaded)
    }

    /// Registers `wasm` as the template `name` with `manager` and stores it. `taken_hashes` are the
    /// sha256s of modules the runtime knows under names the manager does not list (the interpreters),
    /// with those names. Registering the same module under the same name again changes nothing.
    pub fn register(
        &self,
        manager: &Manager,
        taken_hashes: &[(&str, [u8; 32])],
        name: &str,
        wasm: &[u8],
    ) -> Result<Registered, RegisterError> {
        if !valid_name(name) {
            return Err(RegisterError::InvalidName(name.to_owned()));
        }
        if is_built_in(name) {
            return Err(RegisterError::Reserved(name.to_owned()));
        }
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let sha256: [u8; 32] = Sha256::digest(wasm).into();
        if let Some(existing) = manager.template(name) {
            return if existing.sha256() == sha256 {
                Ok(Registered::Existing(existing))
            } else {
                Err(RegisterError::Taken(name.to_owned()))
            };
        }
        let registered = manager
            .template_names()
            .into_iter()
            .filter_map(|other| manager.template(&other))
            .map(|t| (t.name().to_owned(), t.sha256()));
        let others = taken_hashes
            .iter()
            .map(|(other, hash)| ((*other).to_owned(), *hash));
        if let Some((other, _)) = registered.chain(others).find(|(_, hash)| *hash == sha256) {
            return Err(RegisterError::DuplicateModule(other));
        }
        // Validated and compiled before anything is written, so a refused module leaves no file behind.
        manager
            .runtime()
            .load_template(name, wasm)
            .map_err(RegisterError::Module)?;
        write_atomic(&self.path(name), wasm).map_err(RegisterError::Store)?;
        let template = manager
            .register_template(name, wasm)
            .map_err(RegisterError::Register)?;
        Ok(Registered::Created(template))
    }

    /// Where the module of template `name` is stored.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.wasm"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_pattern() {
        for good in ["a", "0", "my-tool", "x.y_z-1", &"a".repeat(63)] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "_a",
            "A",
            "a/b",
            "a b",
            "é",
            "..",
            &"a".repeat(64),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn built_ins_are_reserved() {
        assert!(is_built_in("base") && is_built_in("code-interpreter-v1"));
        assert!(!is_built_in("hello"));
    }
}
