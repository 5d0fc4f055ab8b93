//! A Stasis server in this process, on a loopback port, and a minimal HTTP/1.1 client for it: the command
//! round trip over HTTP measures what an SDK user sees (connection, request, the guest's run, the streamed
//! Connect reply), without the noise of another client library.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use anyhow::{Context, Result, bail};
use stasis::lifecycle::ManagerConfig;
use stasis_server::{AppState, app};

const API_KEY: &str = "bench-key";

/// A running server; stops with the process.
pub struct Server {
    addr: SocketAddr,
}

impl Server {
    /// Starts the server on a free loopback port with its data under `data_dir`.
    pub fn start(data_dir: &std::path::Path) -> Result<Self> {
        let (state, _) =
            AppState::open(data_dir, API_KEY.into(), 64 << 20, ManagerConfig::default())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        std::thread::Builder::new()
            .name("bench-server".into())
            .spawn(move || {
                // The server runs until the bench process exits.
                let _ = runtime.block_on(async move { axum::serve(listener, app(state)).await });
            })?;
        Ok(Self { addr })
    }

    /// Creates a `base` sandbox; returns its id and envd access token.
    pub fn create_sandbox(&self) -> Result<(String, String)> {
        let (status, body) = self.request(
            "POST",
            "/sandboxes",
            &[("X-API-KEY", API_KEY)],
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

    /// One request on a fresh connection (`Connection: close`, so the body ends with the connection).
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        content_type: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>)> {
        let mut stream = TcpStream::connect(self.addr)?;
        stream.set_nodelay(true)?;
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
        Ok((status, body))
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
