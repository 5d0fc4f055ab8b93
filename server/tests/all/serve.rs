//! `stasis serve` as a process: real HTTP over loopback, and SIGTERM pausing the running sandboxes so a
//! restart finds them paused, not lost.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The API key of the served servers.
pub const KEY: &str = "serve-test-key";

/// A running `stasis serve` and the address it listens on.
pub struct Serve {
    child: Child,
    /// `host:port`.
    pub address: String,
}

impl Serve {
    /// Starts `stasis serve` on port 0 over `data_dir`, and waits until it listens.
    pub fn start(data_dir: &std::path::Path) -> Result<Self> {
        Self::start_with(data_dir, &[], &[])
    }

    /// [`Serve::start`] with more arguments and environment variables.
    pub fn start_with(
        data_dir: &std::path::Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<Self> {
        let mut child = crate::common::stasis_command()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .envs(envs.iter().copied())
            .env("STASIS_API_KEY", KEY)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let address = loop {
            let Some(line) = lines.next() else {
                bail!("stasis serve exited before listening: {:?}", child.wait()?)
            };
            if let Some(address) = line?.strip_prefix("stasis listening on http://") {
                break address.to_owned();
            }
        };
        Ok(Self { child, address })
    }

    /// One HTTP/1.1 request with a JSON body; returns the status and the body.
    fn request(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
        let (status, body) = self.send(
            method,
            path,
            &[("Content-Type", "application/json")],
            body.unwrap_or("").as_bytes(),
        )?;
        Ok((status, String::from_utf8(body)?))
    }

    /// One HTTP/1.1 request with the API key, `headers` and `body`; returns the status and the body
    /// (de-chunked when the server streamed it).
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(u16, Vec<u8>)> {
        let mut stream = TcpStream::connect(&self.address)?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nX-API-KEY: {KEY}\r\nContent-Length: {}\r\n\
             Connection: close\r\n",
            self.address,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("no end of the response's head")?;
        let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("status line")?;
        let mut body = response[split + 4..].to_vec();
        if head.contains("transfer-encoding: chunked") {
            body = dechunk(&body)?;
        }
        Ok((status, body))
    }

    fn terminate(mut self) -> Result<std::process::ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        assert!(status.success());
        Ok(self.child.wait()?)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // A test that failed half-way must not leave its server behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of a `Transfer-Encoding: chunked` response.
fn dechunk(mut chunked: &[u8]) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = chunked
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a chunk without its size line")?;
        let size = usize::from_str_radix(std::str::from_utf8(&chunked[..line])?.trim(), 16)?;
        chunked = &chunked[line + 2..];
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(chunked.get(..size).context("a truncated chunk")?);
        chunked = chunked.get(size + 2..).context("a chunk without its end")?;
    }
}

fn sandbox_id(body: &str) -> Result<String> {
    let json: Value = serde_json::from_str(body)?;
    Ok(json["sandboxID"].as_str().context("sandboxID")?.to_owned())
}

#[test]
fn serve_over_http_and_sigterm_pauses_running_sandboxes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Serve::start(dir.path())?;
    assert_eq!(server.request("GET", "/health", None)?.0, 204);

    let (status, body) =
        server.request("POST", "/v2/sandboxes", Some(r#"{"templateID":"base"}"#))?;
    assert_eq!(status, 201, "{body}");
    let paused = sandbox_id(&body)?;
    assert_eq!(
        server
            .request("POST", &format!("/sandboxes/{paused}/pause"), None)?
            .0,
        204
    );
    assert_eq!(
        server
            .request("POST", &format!("/sandboxes/{paused}/connect"), Some("{}"))?
            .0,
        201
    );
    assert_eq!(
        server
            .request("DELETE", &format!("/sandboxes/{paused}"), None)?
            .0,
        204
    );

    let (_, body) = server.request("POST", "/v2/sandboxes", Some("{}"))?;
    let running = sandbox_id(&body)?;
    let status = server.terminate()?;
    assert!(status.success(), "{status:?}");
    assert!(
        dir.path()
            .join("boxes")
            .join(&running)
            .join("state.blob")
            .is_file(),
        "SIGTERM did not pause the running sandbox to its blob"
    );

    // A new server on the same directory finds it paused, and resumes it.
    let server = Serve::start(dir.path())?;
    let (_, body) = server.request("GET", &format!("/sandboxes/{running}"), None)?;
    let info: Value = serde_json::from_str(&body)?;
    assert_eq!(info["state"], "paused", "{body}");
    assert_eq!(
        server
            .request("POST", &format!("/sandboxes/{running}/connect"), Some("{}"))?
            .0,
        201
    );
    server.terminate()?;
    Ok(())
}

#[test]
fn limits_and_the_disk_floor_come_from_the_command_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Serve::start_with(
        dir.path(),
        &["--max-running", "2", "--max-paused", "1"],
        &[],
    )?;
    let create = || -> Result<(u16, String)> {
        server.request("POST", "/v2/sandboxes", Some(r#"{"templateID":"base"}"#))
    };
    let first = sandbox_id(&create()?.1)?;
    let second = sandbox_id(&create()?.1)?;
    let (status, body) = create()?;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("at most 2 running sandboxes"), "{body}");
    let pause = |id: &str| server.request("POST", &format!("/sandboxes/{id}/pause"), None);
    assert_eq!(pause(&first)?.0, 204);
    let (status, body) = pause(&second)?;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("at most 1 paused sandboxes"), "{body}");
    drop(server);

    // A floor above any disk: every pause is refused with 507, before anything is written, and the
    // sandbox runs on. Set through the environment, as the other flags can be.
    let dir = tempfile::tempdir()?;
    let server = Serve::start_with(dir.path(), &[], &[("STASIS_MIN_FREE_DISK", "1000000T")])?;
    let (_, body) = server.request("POST", "/v2/sandboxes", Some(r#"{"templateID":"base"}"#))?;
    let id = sandbox_id(&body)?;
    let (status, body) = server.request("POST", &format!("/sandboxes/{id}/pause"), None)?;
    assert_eq!(status, 507, "{body}");
    let error: Value = serde_json::from_str(&body)?;
    assert_eq!(error["code"], 507);
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("not enough free disk space")),
        "{body}"
    );
    let (_, body) = server.request("GET", &format!("/sandboxes/{id}"), None)?;
    assert_eq!(serde_json::from_str::<Value>(&body)?["state"], "running");
    assert!(
        !dir.path()
            .join("boxes")
            .join(&id)
            .join("state.blob")
            .exists()
    );
    drop(server);

    // A size that is not one is refused at the start, saying why.
    let output = crate::common::stasis_command()
        .args(["serve", "--min-free-disk", "12 furlongs", "--data-dir"])
        .arg(dir.path())
        .env("STASIS_API_KEY", KEY)
        .output()?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--min-free-disk"), "{stderr}");
    assert!(stderr.contains("unknown size unit"), "{stderr}");
    Ok(())
}
