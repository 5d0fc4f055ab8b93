//! Helpers shared by the router tests: a server state on a temporary data directory, requests through
//! `tower::ServiceExt::oneshot`, and the Connect envelope decoder a client would use.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use stasis::lifecycle::ManagerConfig;
use stasis::{RuntimeConfig, SandboxLimits};
use stasis_server::{AppState, app};
use tower::ServiceExt;

/// The API key of the test servers.
pub const KEY: &str = "test-key";
/// The body limit of the test servers: small, so 413 is cheap to provoke.
pub const LIMIT: usize = 1 << 20;

/// A server on its own data directory.
pub struct Server {
    /// Kept alive for the data directory.
    pub _dir: tempfile::TempDir,
    /// The shared state (for the access tokens).
    pub state: AppState,
}

/// An HTTP answer, body collected.
pub struct Reply {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

impl Server {
    /// A fresh server.
    pub fn new() -> anyhow::Result<Self> {
        Self::with_limits(SandboxLimits::default())
    }

    /// A fresh server whose sandboxes have `limits`. Every test server shares one compiled-module cache
    /// ([`module_cache`]), so the interpreter guests are compiled once per test run, not once per test.
    pub fn with_limits(limits: SandboxLimits) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut runtime = RuntimeConfig::new(dir.path());
        runtime.limits = limits;
        runtime.cache_dir = Some(module_cache());
        let (state, _) = AppState::open_runtime(
            runtime,
            vec![KEY.to_owned()],
            LIMIT,
            ManagerConfig::default(),
        )?;
        Ok(Self { _dir: dir, state })
    }

    /// The router.
    pub fn app(&self) -> Router {
        app(self.state.clone())
    }

    /// Sends `request` and collects the reply.
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.app().oneshot(request).await.expect("infallible");
        let (parts, body) = response.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.expect("body").to_bytes(),
        }
    }

    /// A control-plane request with the API key and an optional JSON body.
    pub async fn api(&self, method: &str, uri: &str, body: Option<Value>) -> Reply {
        let builder = Request::builder()
            .method(method)
            .uri(uri)
            .header("X-API-KEY", KEY);
        let request = match body {
            Some(body) => builder
                .header("content-type", "application/json")
                .body(Body::from(body.to_string())),
            None => builder.body(Body::empty()),
        };
        self.send(request.expect("request")).await
    }

    /// Creates a sandbox; returns its id.
    pub async fn create(&self, body: Value) -> String {
        let reply = self.api("POST", "/v2/sandboxes", Some(body)).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        reply.json()["sandboxID"]
            .as_str()
            .expect("sandboxID")
            .to_owned()
    }

    /// An envd request builder for sandbox `id` with its access token.
    pub fn envd(&self, id: &str, method: &str, uri: &str) -> axum::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("E2b-Sandbox-Id", id)
            .header("X-Access-Token", self.state.access_token(id))
    }

    /// A unary Connect call on sandbox `id`.
    pub async fn unary(&self, id: &str, path: &str, body: Value) -> Reply {
        let request = self
            .envd(id, "POST", path)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .expect("request");
        self.send(request).await
    }

    /// A streaming `process.Process/Start` of `bash -l -c LINE`; returns the decoded envelopes.
    pub async fn start(&self, id: &str, line: &str) -> (Reply, Vec<(u8, Value)>) {
        let message = serde_json::json!({
            "process": {"cmd": "/bin/bash", "args": ["-l", "-c", line], "envs": {}},
            "stdin": false,
        });
        let request = self
            .envd(id, "POST", "/process.Process/Start")
            .header("content-type", "application/connect+json")
            .body(Body::from(envelope(0, message.to_string().as_bytes())))
            .expect("request");
        let reply = self.send(request).await;
        let envelopes = envelopes(&reply.body);
        (reply, envelopes)
    }

    /// Uploads `bytes` to `path` as `application/octet-stream`.
    pub async fn upload(&self, id: &str, path: &str, bytes: Vec<u8>) -> Reply {
        let request = self
            .envd(id, "POST", &format!("/files?path={path}"))
            .header("content-type", "application/octet-stream")
            .body(Body::from(bytes))
            .expect("request");
        self.send(request).await
    }

    /// Downloads `path`.
    pub async fn download(&self, id: &str, path: &str) -> Reply {
        let request = self
            .envd(id, "GET", &format!("/files?path={path}"))
            .body(Body::empty())
            .expect("request");
        self.send(request).await
    }
}

/// The compiled-module cache shared by every server of the test run (in-process and real binaries).
pub fn module_cache() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("module-cache")
}

/// The `stasis` binary under test, sharing the test run's compiled-module cache.
pub fn stasis_command() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_stasis"));
    command.env("STASIS_CACHE_DIR", module_cache());
    // Test servers are restarted often (100 times by the crash test) and rarely run code: the interpreters
    // load when a test first needs one.
    command.env("STASIS_NO_WARM_UP", "true");
    command
}

/// One Connect envelope.
pub fn envelope(flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![flags];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Splits a streaming body into (flags, JSON) envelopes, panicking on anything malformed.
pub fn envelopes(mut body: &[u8]) -> Vec<(u8, Value)> {
    let mut out = Vec::new();
    while !body.is_empty() {
        assert!(body.len() >= 5, "truncated envelope header");
        let length = u32::from_be_bytes(body[1..5].try_into().expect("4 bytes")) as usize;
        let json = serde_json::from_slice(&body[5..5 + length]).expect("envelope JSON");
        out.push((body[0], json));
        body = &body[5 + length..];
    }
    out
}

/// The stdout of a finished Start stream, decoded.
pub fn stdout_of(envelopes: &[(u8, Value)]) -> String {
    use base64::Engine as _;
    envelopes
        .iter()
        .filter_map(|(_, e)| e["event"]["data"]["stdout"].as_str())
        .map(|b| {
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .expect("base64"),
            )
            .expect("utf-8")
        })
        .collect()
}
