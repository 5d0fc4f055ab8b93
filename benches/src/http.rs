//! A Stasis server in this process, on a loopback port (or one already running elsewhere), and a minimal
//! HTTP/1.1 client for it: the command round trip over HTTP measures what an SDK user sees (connection,
//! request, the guest's run, the streamed Connect reply), without the noise of another client library.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use stasis::lifecycle::ManagerConfig;
use stasis_server::{AppState, app};

/// The API key of the servers the bench starts.
pub const API_KEY: &str = "bench-key";

/// How long a client waits for a reply before counting the request as failed (a stalled server).
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// A running server (stops with the process), or the address of one started elsewhere.
#[derive(Debug, Clone)]
pub struct Server {
    addr: SocketAddr,
    api_key: String,
}

impl Server {
    /// Starts the server on a free loopback port with its data under `data_dir`, on one worker thread.
    pub fn start(data_dir: &std::path::Path) -> Result<Self> {
        Self::start_with(data_dir, ManagerConfig::default(), Some(1))
    }

    /// Starts the server with this manager configuration, on `workers` async worker threads (tokio's
    /// default, one per core, as `stasis serve` runs, when `None`).
    pub fn start_with(
        data_dir: &std::path::Path,
        config: ManagerConfig,
        workers: Option<usize>,
    ) -> Result<Self> {
        let (state, _) = AppState::open(data_dir, API_KEY.into(), 64 << 20, config)?;
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if let Some(workers) = workers {
            builder.worker_threads(workers);
        }
        let runtime = builder.enable_all().build()?;
        // The server's own listener (its backlog matters once hundreds of clients connect at once).
        let listener = runtime.block_on(async {
            stasis_server::serve::bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        })?;
        let addr = listener.local_addr()?;
        std::thread::Builder::new()
            .name("bench-server".into())
            .spawn(move || {
                // The server runs until the bench process exits.
                let _ = runtime.block_on(async move {
                    axum::serve(listener, app(state).into_make_service()).await
                });
            })?;
        Ok(Self {
            addr,
            api_key: API_KEY.to_owned(),
        })
    }

    /// A server already running at `url` (`http://host:port`), called with `api_key`.
    pub fn at(url: &str, api_key: &str) -> Result<Self> {
        let authority = url
            .strip_prefix("http://")
            .context("only http:// URLs are supported")?
            .trim_end_matches('/');
        let addr = authority
            .to_socket_addrs()?
            .next()
            .with_context(|| format!("{authority} resolves to no address"))?;
        Ok(Self {
            addr,
            api_key: api_key.to_owned(),
        })
    }

    /// Creates a `base` sandbox; returns its id and envd access token.
    pub fn create_sandbox(&self) -> Result<(String, String)> {
        let (status, body) = self.request(
            "POST",
            "/sandboxes",
            &[("X-API-KEY", &self.api_key)],
            "application/json",
            br#"{"templateID":"base","timeout":600}"#,
        )?;
        if status != 201 {
            bail!(
                "create answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let reply: serde_json::Value = serde_json::from_slice(&body)?;
        let id = reply["sandboxID"].as_str().context("sandboxID")?.to_owned();
        let token = reply["envdAccessToken"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Ok((id, token))
    }

    /// Registers `wasm` as the user template (and program) `name` with `POST /templates`.
    pub fn register_template(&self, name: &str, wasm: &[u8]) -> Result<()> {
        let (status, body) = self.request(
            "POST",
            &format!("/templates?name={name}"),
            &[("X-API-KEY", &self.api_key)],
            "application/octet-stream",
            wasm,
        )?;
        if status != 200 && status != 201 {
            bail!(
                "registering {name} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    /// Runs `line` in the sandbox's shell through `/process.Process/Start` and returns the raw reply body.
    pub fn run_command(&self, id: &str, token: &str, line: &str) -> Result<Vec<u8>> {
        let message = serde_json::json!({
            "process": { "cmd": "/bin/bash", "args": ["-l", "-c", line], "envs": {} },
            "stdin": false,
        })
        .to_string();
        let mut envelope = vec![0u8];
        envelope.extend_from_slice(&(message.len() as u32).to_be_bytes());
        envelope.extend_from_slice(message.as_bytes());
        let headers = [("E2b-Sandbox-Id", id), ("X-Access-Token", token)];
        let (status, body) = self.request(
            "POST",
            "/process.Process/Start",
            &headers,
            "application/connect+json",
            &envelope,
        )?;
        if status != 200 {
            bail!(
                "Start answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(body)
    }

    /// `POST /sandboxes/{id}/pause`: must answer 204.
    pub fn pause(&self, id: &str) -> Result<()> {
        self.expect("POST", &format!("/sandboxes/{id}/pause"), 204)
    }

    /// `POST /sandboxes/{id}/connect` of a paused sandbox: must answer 201 (resumed).
    pub fn resume(&self, id: &str) -> Result<()> {
        self.expect("POST", &format!("/sandboxes/{id}/connect"), 201)
    }

    /// `DELETE /sandboxes/{id}`: must answer 204.
    pub fn kill(&self, id: &str) -> Result<()> {
        self.expect("DELETE", &format!("/sandboxes/{id}"), 204)
    }

    /// `GET path` with the API key: the status, the `x-next-token` header if any, and the body.
    pub fn get(&self, path: &str) -> Result<(u16, Option<String>, Vec<u8>)> {
        let (status, head, body) = self.exchange(
            "GET",
            path,
            &[("X-API-KEY", &self.api_key)],
            "application/json",
            b"",
        )?;
        let token = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("x-next-token")
                .then(|| value.trim().to_owned())
        });
        Ok((status, token, body))
    }

    /// A control-plane call without a body that must answer `expected`.
    fn expect(&self, method: &str, path: &str, expected: u16) -> Result<()> {
        let (status, body) = self.request(
            method,
            path,
            &[("X-API-KEY", &self.api_key)],
            "application/json",
            b"",
        )?;
        if status != expected {
            bail!(
                "{method} {path} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    /// One request on a fresh connection (`Connection: close`, so the body ends with the connection).
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        content_type: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>)> {
        let (status, _, body) = self.exchange(method, path, headers, content_type, body)?;
        Ok((status, body))
    }

    /// [`Server::request`], the response's head too.
    fn exchange(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        content_type: &str,
        body: &[u8],
    ) -> Result<(u16, String, Vec<u8>)> {
        let mut stream = TcpStream::connect(self.addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply)?;
        let split = reply
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("no end of headers")?;
        let head = String::from_utf8_lossy(&reply[..split]).to_string();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .context("no status")?
            .parse()?;
        let mut body = reply[split + 4..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body)?;
        }
        Ok((status, head, body))
    }
}

/// Joins the chunks of a chunked HTTP body.
fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunk size line")?;
        let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..line_end]).trim(), 16)?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(raw.get(..size).context("chunk shorter than announced")?);
        raw = raw.get(size + 2..).context("chunk not terminated")?;
    }
}
