//! What the server is configured with, and the secrets it keeps in its data directory: the API key (when
//! none is given) and the key that derives each sandbox's envd access token.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use stasis::lifecycle::ManagerConfig;

/// File in the data directory holding the generated API key.
pub const API_KEY_FILE: &str = "api-key";
/// File in the data directory holding the secret from which envd access tokens are derived.
pub const TOKEN_SECRET_FILE: &str = "envd-token-secret";
/// Default cap on request bodies (uploads included).
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 << 20;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The data directory (sandboxes, blobs, snapshots, secrets).
    pub data_dir: PathBuf,
    /// The API keys clients may send, each a tenant of its own (a key sees only the sandboxes it
    /// created); one is generated and stored in the data directory when the list is empty. Sandboxes
    /// stored before keys were told apart belong to the first.
    pub api_keys: Vec<String>,
    /// Largest accepted request body in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// Where compiled modules are cached; `data_dir/cache` when `None`. Servers (and test runs) sharing
    /// one compile the large interpreter guests once.
    pub cache_dir: Option<PathBuf>,
    /// Whether to load the interpreter guests on a thread of their own at start.
    pub warm_up: bool,
    /// Time between two usage samples of each running sandbox.
    pub metrics_interval: std::time::Duration,
    /// The lifecycle's limits (running and paused sandboxes, the disk floor) and timings.
    pub manager: ManagerConfig,
    /// The domain reported to the SDKs, under which `<port>-<sandboxID>.<domain>` reaches a sandbox's
    /// port through this server; `None` is `localhost:<listen port>`, which curl and browsers resolve to
    /// loopback with any subdomain.
    pub domain: Option<String>,
}

/// Parses a size in bytes: a number with an optional binary unit, `K`, `M`, `G` or `T` (`KiB`, `MiB`,
/// … and `KB`, `MB`, … mean the same; any case), e.g. `256MiB`, `1G`, `4096`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (a number of bytes, or e.g. 256MiB, 1G)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => return Err(format!("unknown size unit {other:?} (K, M, G or T)")),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// A secret read from the data directory, or created there (mode 0600) on first use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    /// The secret, 64 hex digits.
    pub value: String,
    /// Whether it was created by this call (the caller prints a new API key once).
    pub created: bool,
}

/// Reads `data_dir/name`, or creates it with 256 random bits in hex. Created with mode 0600 from the first
/// byte (not chmod'ed after), so no other user can ever read it; `create_new` makes two servers starting
/// at once agree on one value rather than overwrite each other.
pub fn load_or_create_secret(data_dir: &Path, name: &str) -> std::io::Result<Secret> {
    std::fs::create_dir_all(data_dir)?;
    let path = data_dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(value) if !value.trim().is_empty() => {
            return Ok(Secret {
                value: value.trim().to_owned(),
                created: false,
            });
        }
        Ok(_) => std::fs::remove_file(&path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    let value = hex::encode(bytes);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    file.write_all(value.as_bytes())?;
    file.sync_all()?;
    Ok(Secret {
        value,
        created: true,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// The README's "Resource limits" table states this default; change both together.
    #[test]
    fn the_default_body_limit_is_64_mib() {
        assert_eq!(DEFAULT_MAX_BODY_BYTES, 64 << 20);
    }

    #[test]
    fn sizes_parse_with_binary_units_and_junk_is_refused() {
        for (text, bytes) in [
            ("0", 0),
            ("4096", 4096),
            ("256MiB", 256 << 20),
            ("256m", 256 << 20),
            ("1G", 1 << 30),
            ("2 GB", 2 << 30),
            ("1TiB", 1 << 40),
            ("7b", 7),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for junk in ["", "MiB", "-1", "1.5G", "12 furlongs", "99999999999T"] {
            assert!(parse_size(junk).is_err(), "{junk}");
        }
    }

    #[test]
    fn a_secret_is_created_private_once_then_read_back() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let first = load_or_create_secret(dir.path(), API_KEY_FILE)?;
        assert!(first.created);
        assert_eq!(first.value.len(), 64);
        let mode = std::fs::metadata(dir.path().join(API_KEY_FILE))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_create_secret(dir.path(), API_KEY_FILE)?;
        assert_eq!(again.value, first.value);
        assert!(!again.created);
        Ok(())
    }
}
