//! `process.Process`: `Start` runs a command line in the sandbox's shell to completion and streams its
//! events (start, output, end); commands do not outlive their call, so `List` is empty and the calls that
//! address a running process find none.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::json;

use super::lifecycle_error;
use crate::api::blocking;
use crate::auth::envd_sandbox;
use crate::connect::{
    self, Code, ConnectError, end_stream, envelope, stream_error, stream_response,
};
use crate::error::ApiError;
use crate::guest::{command_env, shell_args};
use crate::state::AppState;

/// Process ids handed out: labels for the SDKs' `start` event, unique for the server's life. No process
/// outlives its `Start` call, so none is ever looked up by one.
static NEXT_PID: AtomicU32 = AtomicU32::new(1000);

/// Body of `Start`.
#[derive(Debug, Default, Deserialize)]
pub struct StartRequest {
    /// What to run.
    #[serde(default)]
    pub process: ProcessConfig,
}

/// `ProcessConfig`: the command, its arguments, environment and working directory.
#[derive(Debug, Default, Deserialize)]
pub struct ProcessConfig {
    /// The program: `/bin/bash` (with `-l -c LINE`) from the SDKs.
    #[serde(default)]
    pub cmd: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub envs: BTreeMap<String, String>,
    /// Working directory (the guest's `/` when absent).
    pub cwd: Option<String>,
}

/// Body of the calls that address one process.
#[derive(Debug, Default, Deserialize)]
pub struct ProcessSelectorRequest {
    /// `{"pid": N}` or `{"tag": "…"}`.
    #[serde(default)]
    pub process: serde_json::Value,
}

/// `POST /process.Process/Start` (server streaming).
pub async fn start(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match run(&state, &headers, body).await {
        Ok(body) => stream_response(body),
        Err(error) => stream_error(&error),
    }
}

async fn run(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Vec<u8>, ConnectError> {
    let id = envd_sandbox(state, headers)?;
    let body = body.map_err(|r| ConnectError::from(ApiError::new(r.status(), r.body_text())))?;
    let request: StartRequest = connect::decode(headers, &body)?;
    let process = request.process;
    if process.cmd.is_empty() {
        return Err(ConnectError::new(
            Code::InvalidArgument,
            "process.cmd is empty",
        ));
    }
    let args = shell_args(&process.cmd, &process.args);
    let env = command_env(&process.envs, process.cwd.as_deref());
    let manager = state.manager().clone();
    let shell = state.shell().clone();
    let sandbox = id.clone();
    let output = blocking(move || {
        manager.with_sandbox(&sandbox, |s| s.run_with_env(&shell, &args, &env, b""))
    })
    .await
    .map_err(ConnectError::from)?
    .map_err(lifecycle_error)?
    .map_err(|e| ConnectError::from(ApiError::internal(&e)))?;
    let pid = NEXT_PID.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(sandbox = %id, pid, exit_code = output.exit_code, "command ran");

    let event =
        |event: serde_json::Value| envelope(0, json!({ "event": event }).to_string().as_bytes());
    let mut stream = event(json!({ "start": { "pid": pid } }));
    for (name, bytes) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        if !bytes.is_empty() {
            stream.extend(event(json!({ "data": { name: BASE64.encode(bytes) } })));
        }
    }
    let mut end = json!({
        "exitCode": output.exit_code,
        "exited": true,
        "status": format!("exit status {}", output.exit_code),
    });
    if let Some(trap) = output.trap {
        end["error"] = json!(trap);
    }
    stream.extend(event(json!({ "end": end })));
    stream.extend(end_stream(None));
    Ok(stream)
}

/// `POST /process.Process/List`: no process outlives its call, so none is listed.
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ConnectError> {
    envd_sandbox(&state, &headers)?;
    Ok(Json(json!({ "processes": [] })))
}

/// `SendInput`, `SendSignal`, `CloseStdin`, `Update` (unary): the process is not found, which the SDKs
/// read as "already finished" (`kill` returns false).
pub async fn unknown_process(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ConnectError> {
    Err(not_found(&state, &headers, body))
}

/// `Connect`, `StreamInput` (streaming): as [`unknown_process`], in the streaming form.
pub async fn unknown_process_stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    stream_error(&not_found(&state, &headers, body)).into_response()
}

fn not_found(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ConnectError {
    if let Err(error) = envd_sandbox(state, headers) {
        return error;
    }
    let body = body.unwrap_or_default();
    let selector = connect::decode::<ProcessSelectorRequest>(headers, &body)
        .map(|r| r.process)
        .unwrap_or_default();
    let which = selector
        .get("pid")
        .map(|pid| format!("pid {pid}"))
        .or_else(|| selector.get("tag").map(|tag| format!("tag {tag}")))
        .unwrap_or_else(|| "the given selector".to_owned());
    ConnectError::new(Code::NotFound, format!("process with {which} not found"))
}
