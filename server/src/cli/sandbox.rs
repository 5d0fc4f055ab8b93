//! `stasis sandbox list|create|pause|resume|kill|exec`: a client for humans against a running server,
//! speaking the same REST and Connect protocol as the SDKs.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use base64::Engine as _;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// Largest response body read (an `exec` can print a lot).
const MAX_RESPONSE_BYTES: u64 = 256 << 20;

/// Arguments of `stasis sandbox`.
#[derive(Args, Debug)]
pub struct SandboxArgs {
    /// The server's base URL.
    #[arg(long, global = true, default_value = "http://127.0.0.1:3000")]
    url: String,
    /// The server's API key.
    #[arg(long, global = true, env = "STASIS_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    #[command(subcommand)]
    command: SandboxCommand,
}

#[derive(Subcommand, Debug)]
enum SandboxCommand {
    /// List sandboxes as a table.
    List {
        /// Only sandboxes in these states (running, paused), comma-separated.
        #[arg(long)]
        state: Option<String>,
    },
    /// Create a sandbox; prints its id.
    Create {
        /// Template name or snapshot id.
        #[arg(long, default_value = "base")]
        template: String,
        /// Seconds until its timeout applies.
        #[arg(long)]
        timeout: Option<u64>,
        /// Metadata, as KEY=VALUE.
        #[arg(long = "metadata", value_name = "KEY=VALUE")]
        metadata: Vec<String>,
        /// Pause rather than kill it at its timeout.
        #[arg(long)]
        auto_pause: bool,
    },
    /// Pause a running sandbox to its blob.
    Pause {
        /// The sandbox id.
        id: String,
    },
    /// Resume a paused sandbox.
    Resume {
        /// The sandbox id.
        id: String,
        /// Seconds until its timeout applies, from now.
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Kill a sandbox, deleting everything stored of it.
    Kill {
        /// The sandbox id.
        id: String,
    },
    /// Run a command line in a sandbox; prints its output and exits with its exit code.
    Exec {
        /// The sandbox id.
        id: String,
        /// The command: one shell line, or a program and its arguments (quoted for the shell).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No API key given.
    #[error("no API key: pass --api-key or set STASIS_API_KEY")]
    NoApiKey,
    /// The server could not be reached or the exchange failed.
    #[error("request to {url} failed")]
    Transport {
        /// What was requested.
        url: String,
        /// Why.
        #[source]
        source: ureq::Error,
    },
    /// The server answered with an error.
    #[error("the server answered {status}: {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The server's answer is not what the protocol says.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

/// A connection to one server.
struct Client {
    agent: ureq::Agent,
    url: String,
    api_key: String,
}

/// A response: status and body.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Result<Value, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| ClientError::Protocol(e.to_string()))
    }
}

impl Client {
    fn new(url: String, api_key: Option<String>) -> Result<Self, ClientError> {
        let agent = ureq::Agent::config_builder()
            // Error statuses are answers to report with the server's message, not transport failures.
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)))
            .build()
            .into();
        Ok(Self {
            agent,
            url: url.trim_end_matches('/').to_owned(),
            // STASIS_API_KEY may list the server's keys, comma-separated: a client speaks with the first.
            api_key: api_key
                .as_deref()
                .and_then(|keys| keys.split(',').map(str::trim).find(|k| !k.is_empty()))
                .map(str::to_owned)
                .ok_or(ClientError::NoApiKey)?,
        })
    }

    /// `method path` with the API key; a JSON body when given. Error statuses become [`ClientError::Api`].
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Answer, ClientError> {
        let url = format!("{}{path}", self.url);
        let transport = |source| ClientError::Transport {
            url: url.clone(),
            source,
        };
        let response = match (method, body) {
            ("GET", _) => self
                .agent
                .get(&url)
                .header("X-API-KEY", &self.api_key)
                .call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("X-API-KEY", &self.api_key)
                .call(),
            (_, Some(body)) => self
                .agent
                .post(&url)
                .header("X-API-KEY", &self.api_key)
                .send_json(body),
            (_, None) => self
                .agent
                .post(&url)
                .header("X-API-KEY", &self.api_key)
                .send_empty(),
        }
        .map_err(transport)?;
        answer(response).map_err(transport)?.checked()
    }
}

fn answer(mut response: ureq::http::Response<ureq::Body>) -> Result<Answer, ureq::Error> {
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_RESPONSE_BYTES)
        .read_to_vec()?;
    Ok(Answer { status, body })
}

impl Answer {
    /// The answer if its status is a success; the server's `message` as an error otherwise.
    fn checked(self) -> Result<Self, ClientError> {
        if (200..300).contains(&self.status) {
            return Ok(self);
        }
        let message = serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned());
        Err(ClientError::Api {
            status: self.status,
            message,
        })
    }
}

/// Runs `stasis sandbox …`.
pub fn sandbox(args: SandboxArgs) -> Result<ExitCode> {
    let client = Client::new(args.url, args.api_key)?;
    match args.command {
        SandboxCommand::List { state } => list(&client, state.as_deref()),
        SandboxCommand::Create {
            template,
            timeout,
            metadata,
            auto_pause,
        } => {
            let mut map = BTreeMap::new();
            for pair in &metadata {
                let (key, value) = pair
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--metadata takes KEY=VALUE, got {pair:?}"))?;
                map.insert(key.to_owned(), value.to_owned());
            }
            let mut body =
                json!({ "templateID": template, "metadata": map, "autoPause": auto_pause });
            if let Some(timeout) = timeout {
                body["timeout"] = json!(timeout);
            }
            let created = client.call("POST", "/sandboxes", Some(&body))?.json()?;
            println!("{}", field(&created, "sandboxID")?);
            Ok(ExitCode::SUCCESS)
        }
        SandboxCommand::Pause { id } => {
            client.call("POST", &format!("/sandboxes/{id}/pause"), None)?;
            println!("paused {id}");
            Ok(ExitCode::SUCCESS)
        }
        SandboxCommand::Resume { id, timeout } => {
            let body = timeout.map_or_else(|| json!({}), |t| json!({ "timeout": t }));
            let answer = client.call("POST", &format!("/sandboxes/{id}/connect"), Some(&body))?;
            let verb = if answer.status == 201 {
                "resumed"
            } else {
                "already running:"
            };
            println!("{verb} {id}");
            Ok(ExitCode::SUCCESS)
        }
        SandboxCommand::Kill { id } => {
            client.call("DELETE", &format!("/sandboxes/{id}"), None)?;
            println!("killed {id}");
            Ok(ExitCode::SUCCESS)
        }
        SandboxCommand::Exec { id, command } => exec(&client, &id, &command),
    }
}

fn field<'a>(value: &'a Value, name: &str) -> Result<&'a str, ClientError> {
    value[name]
        .as_str()
        .ok_or_else(|| ClientError::Protocol(format!("no {name} in {value}")))
}

/// Prints every sandbox (all pages) as a table.
fn list(client: &Client, state: Option<&str>) -> Result<ExitCode> {
    let mut rows = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut query = vec![("limit", "100".to_owned())];
        if let Some(state) = state {
            query.push(("state", state.to_owned()));
        }
        if let Some(token) = &next {
            query.push(("nextToken", token.clone()));
        }
        let query = serde_urlencoded::to_string(&query)?;
        let url = format!("{}/v2/sandboxes?{query}", client.url);
        let response = client
            .agent
            .get(&url)
            .header("X-API-KEY", &client.api_key)
            .call()
            .map_err(|source| ClientError::Transport {
                url: url.clone(),
                source,
            })?;
        next = response
            .headers()
            .get("x-next-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let page = answer(response)
            .map_err(|source| ClientError::Transport { url, source })?
            .checked()?
            .json()?;
        let items = page
            .as_array()
            .ok_or_else(|| ClientError::Protocol(format!("a list is an array, got {page}")))?;
        for item in items {
            let metadata = item["metadata"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            rows.push([
                field(item, "sandboxID")?.to_owned(),
                field(item, "templateID")?.to_owned(),
                field(item, "state")?.to_owned(),
                field(item, "startedAt")?.to_owned(),
                field(item, "endAt")?.to_owned(),
                metadata,
            ]);
        }
        if next.is_none() {
            break;
        }
    }
    print!(
        "{}",
        table(
            ["ID", "TEMPLATE", "STATE", "STARTED", "END", "METADATA"],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

/// Left-aligned columns two spaces apart, the header first.
fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// One shell line from the words after `--`: a single word is already a line; several are quoted so
/// the shell sees exactly those arguments.
fn shell_line(command: &[String]) -> String {
    if let [line] = command {
        return line.clone();
    }
    command
        .iter()
        .map(|word| {
            let plain = !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
            if plain {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs the command through envd's `process.Process/Start` and relays its output and exit code.
fn exec(client: &Client, id: &str, command: &[String]) -> Result<ExitCode> {
    let info = client
        .call("GET", &format!("/sandboxes/{id}"), None)?
        .json()?;
    let token = field(&info, "envdAccessToken")?.to_owned();
    let message = json!({
        "process": {"cmd": "/bin/bash", "args": ["-l", "-c", shell_line(command)], "envs": {}},
        "stdin": false,
    })
    .to_string();
    let mut envelope = vec![0u8];
    envelope.extend_from_slice(&(message.len() as u32).to_be_bytes());
    envelope.extend_from_slice(message.as_bytes());
    let url = format!("{}/process.Process/Start", client.url);
    let transport = |source| ClientError::Transport {
        url: url.clone(),
        source,
    };
    let response = client
        .agent
        .post(&url)
        .header("E2b-Sandbox-Id", id)
        .header("X-Access-Token", &token)
        .header("Content-Type", "application/connect+json")
        .send(&envelope[..])
        .map_err(transport)?;
    let answer = answer(response).map_err(transport)?.checked()?;
    let mut body = &answer.body[..];
    let mut exit_code = None;
    while !body.is_empty() {
        let (flags, length) = match body {
            [flags, a, b, c, d, ..] => (*flags, u32::from_be_bytes([*a, *b, *c, *d]) as usize),
            _ => return Err(ClientError::Protocol("truncated envelope".into()).into()),
        };
        let payload = body
            .get(5..5 + length)
            .ok_or_else(|| ClientError::Protocol("truncated envelope".into()))?;
        body = &body[5 + length..];
        let value: Value =
            serde_json::from_slice(payload).map_err(|e| ClientError::Protocol(e.to_string()))?;
        // Flag 2 is the end-of-stream message: an error in it is the call's failure.
        if flags & 2 != 0 {
            if let Some(error) = value.get("error") {
                return Err(ClientError::Protocol(format!("the call failed: {error}")).into());
            }
            continue;
        }
        let event = &value["event"];
        for (stream, name) in [(0, "stdout"), (1, "stderr")] {
            if let Some(data) = event["data"][name].as_str() {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                if stream == 0 {
                    std::io::stdout().write_all(&bytes)?;
                } else {
                    std::io::stderr().write_all(&bytes)?;
                }
            }
        }
        if let Some(code) = event["end"]["exitCode"].as_i64() {
            exit_code = Some(code);
        }
    }
    std::io::stdout().flush()?;
    let code = exit_code.ok_or_else(|| ClientError::Protocol("the process never ended".into()))?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

#[cfg(test)]
mod tests {
    use super::{shell_line, table};

    #[test]
    fn words_are_quoted_for_the_shell_and_one_word_is_a_line() {
        assert_eq!(shell_line(&["echo hi | wc".into()]), "echo hi | wc");
        assert_eq!(
            shell_line(&["echo".into(), "it's".into(), "a b".into()]),
            r"echo 'it'\''s' 'a b'"
        );
    }

    #[test]
    fn tables_align_columns() {
        let rows = [["abc".to_owned(), "x".to_owned()]];
        assert_eq!(table(["ID", "STATE"], &rows), "ID   STATE\nabc  x\n");
    }
}
