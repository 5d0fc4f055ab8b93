//! `process.Process`: commands as processes. `Start` runs a command line in the sandbox's shell (or, in a
//! sandbox of a user command template, that module when `cmd` names it) on a thread of its own and streams
//! its events as they happen (start, output as written, keepalives, end); the command stays in the
//! sandbox's process table until it ends, whether or not a client still listens, so `List`, `SendInput`, `CloseStdin`, `SendSignal`, `Connect` and `StreamInput` find it by pid or tag.
//!
//! What ends a command besides itself: `SendSignal` (SIGKILL → exit code 137, SIGTERM → 143; a guest cannot
//! catch signals), killing the sandbox. Pausing the sandbox *suspends* it: the command is saved with the
//! sandbox mid-run, its clients' streams end with an `unavailable` error saying so, and when the sandbox
//! resumes ([`continue_suspended`]) it continues under the same pid, tag and configuration — listed by
//! `List`, reached by `Connect`, `SendInput` and `SendSignal` as before. (A command whose module cannot be
//! paused mid-call ends with 137 and an `error` saying why.) `StreamInput` reads the whole request
//! before writing it to stdin (the server receives request bodies whole).
//!
//! A `Start` with a `pty` (what `sandbox.pty.create` sends: `/bin/bash -i -l`) gives the process a
//! terminal ([`crate::pty`]): a shell asked for without `-c` runs interactively (`sh -i`), other commands
//! run as usual; `SendInput` with `input.pty` is typed into it (echoed, edited, handed over line by line;
//! Ctrl-C interrupts the running command), its output comes back as `data.pty` with `\r\n` line ends, and
//! `Update` with `pty.size` resizes it. The guest sees the starting size as `COLUMNS` and `LINES`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::json;
use stasis::lifecycle::events::SandboxLog;
use stasis::lifecycle::{Event as LogEvent, Level};
use stasis::wasi::{OutputSink, PipeError, Stdin, StdinPipe, StopReason};
use stasis::{CommandIo, ModuleKind};
use tokio::sync::mpsc::UnboundedReceiver;

use super::lifecycle_error;
use crate::api::blocking;
use crate::auth::envd_sandbox;
use crate::connect::{
    self, Code, ConnectError, END_STREAM, STREAM_CONTENT_TYPE, end_stream, envelope, stream_error,
};
use crate::error::ApiError;
use crate::guest::{command_env, interactive_shell, runs_own_template, shell_args};
use crate::processes::{Entry, Event, Hub, ProcessTable, Selector};
use crate::pty::{Action, Pty, PtySize, onlcr};
use crate::state::AppState;

/// Process ids handed out, unique for the server's life.
static NEXT_PID: AtomicU32 = AtomicU32::new(1000);

/// Most unread bytes a command's stdin pipe holds; `SendInput` past it is `resource_exhausted`.
pub const STDIN_CAPACITY: usize = 16 << 20;
/// Largest data event sent: output written in many small pieces is merged up to this.
const MAX_DATA_EVENT: usize = 64 << 10;
/// Keepalive interval when the client does not say (`Keepalive-Ping-Interval`, seconds).
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(50);
/// Header in which the SDKs give the keepalive interval, in seconds.
const KEEPALIVE_HEADER: &str = "keepalive-ping-interval";

/// Body of `Start`.
#[derive(Debug, Default, Deserialize)]
pub struct StartRequest {
    /// What to run.
    #[serde(default)]
    pub process: ProcessConfig,
    /// A name to find the process by, besides its pid.
    pub tag: Option<String>,
    /// Keep stdin open for `SendInput`/`StreamInput` until `CloseStdin`; otherwise stdin is empty.
    pub stdin: Option<bool>,
    /// `PTY`: `{"size": {"cols": C, "rows": R}}` gives the process a terminal of that size.
    pub pty: Option<serde_json::Value>,
}

/// `ProcessConfig`: the command, its arguments, environment and working directory.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// Body of the calls that address one process.
#[derive(Debug, Default, Deserialize)]
pub struct ProcessSelectorRequest {
    /// `{"pid": N}` or `{"tag": "…"}`.
    #[serde(default)]
    pub process: serde_json::Value,
    /// `SendInput`: `{"stdin": "<base64>"}`, or `{"pty": "<base64>"}` for a process with a terminal.
    #[serde(default)]
    pub input: Option<serde_json::Value>,
    /// `Update`: `{"size": {"cols": C, "rows": R}}`, the terminal's new size.
    #[serde(default)]
    pub pty: Option<serde_json::Value>,
    /// `SendSignal`: `SIGNAL_SIGKILL`/`SIGNAL_SIGTERM` or their numbers.
    #[serde(default)]
    pub signal: Option<serde_json::Value>,
}

/// `POST /process.Process/Start` (server streaming).
pub async fn start(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match start_command(&state, &headers, body).await {
        Ok((pid, events)) => event_stream(pid, events, keepalive_interval(&headers)),
        Err(error) => stream_error(&error),
    }
}

async fn start_command(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(u32, UnboundedReceiver<Event>), ConnectError> {
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
    let size = request
        .pty
        .as_ref()
        .map(PtySize::from_pty_json)
        .transpose()
        .map_err(|e| ConnectError::new(Code::InvalidArgument, e.to_string()))?;
    let shell_args = match size {
        Some(_) if interactive_shell(&process.cmd, &process.args) => vec!["-i".to_owned()],
        _ => shell_args(&process.cmd, &process.args),
    };
    let (cmd, own_args) = (process.cmd.clone(), process.args.clone());
    let mut env = command_env(&process.envs, process.cwd.as_deref());
    if let Some(size) = size {
        terminal_env(&mut env, size);
    }
    let hub = Arc::new(Hub::default());
    let events = hub
        .subscribe()
        .ok_or_else(|| ConnectError::new(Code::Internal, "the process ended before it started"))?;
    // A terminal's input is the process's stdin.
    let pipe =
        (request.stdin.unwrap_or(false) || size.is_some()).then(|| StdinPipe::new(STDIN_CAPACITY));
    let manager = state.manager().clone();
    let shell = state.shell().clone();
    let sandbox = id.clone();
    let (out_hub, err_hub) = (hub.clone(), hub.clone());
    let stdin = pipe.clone();
    let pid = NEXT_PID.fetch_add(1, Ordering::Relaxed);
    let config = serde_json::to_value(&process).unwrap_or_default();
    let label = CommandLabel {
        command: Saved {
            pid,
            tag: request.tag.clone(),
            config: config.clone(),
            stdin: pipe.is_some(),
            pty: size,
        },
    }
    .to_json();
    let command = blocking(move || {
        manager.with_sandbox(&sandbox, |s| {
            let io = streams(
                s.limits().max_output_bytes,
                stdin.map_or(Stdin::Empty, Stdin::Pipe),
                out_hub,
                err_hub,
                size.is_some(),
            );
            // A user command template's sandbox runs its module when asked for it by name.
            let own = s.template().clone();
            if own.kind() == ModuleKind::Command && runs_own_template(own.name(), &cmd) {
                s.start_command_labeled(&own, &own_args, &env, io, &label)
            } else {
                s.start_command_labeled(&shell, &shell_args, &env, io, &label)
            }
        })
    })
    .await
    .map_err(ConnectError::from)?
    .map_err(lifecycle_error)?
    .map_err(|e| match e {
        stasis::RunError::Spawn(stasis::SpawnError::TooManyProcesses(n)) => ConnectError::new(
            Code::ResourceExhausted,
            format!("the sandbox already runs {n} processes, its limit"),
        ),
        other => ConnectError::from(ApiError::internal(&other)),
    })?;
    state.processes().insert(
        &id,
        Entry {
            pid,
            tag: request.tag,
            config,
            control: command.control(),
            hub: hub.clone(),
            pty: size.map(|size| Arc::new(Pty::new(size))),
        },
    );
    state.manager().log(
        &id,
        LogEvent::now(Level::Info, "command_started", "Command started")
            .with("pid", pid)
            .with("cmd", process.args.last().map_or("", String::as_str)),
    );
    let log = state.manager().event_log(&id);
    if let Err(error) = run_in_background(state.processes().clone(), &id, pid, command, hub, log) {
        // The command was never run; dropping it (with the closure) marks it ended for the sandbox.
        state.processes().remove(&id, pid);
        return Err(ConnectError::from(ApiError::internal(&error)));
    }
    tracing::debug!(sandbox = %id, pid, "command started");
    Ok((pid, events))
}

/// What a command's label keeps of it in the sandbox (and so in a blob, should a pause suspend it): what
/// clients know it by.
#[derive(Debug, Serialize, Deserialize)]
struct CommandLabel {
    command: Saved,
}

#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    pid: u32,
    tag: Option<String>,
    config: serde_json::Value,
    stdin: bool,
    /// The terminal's size, for a process started with one (absent from labels written before PTYs).
    #[serde(default)]
    pty: Option<PtySize>,
}

impl CommandLabel {
    fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A command's streams: stdout and stderr published to `hub`s' streams as written — with a terminal
/// (`pty`), both as what the terminal shows.
fn streams(
    limit: usize,
    stdin: Stdin,
    out_hub: Arc<Hub>,
    err_hub: Arc<Hub>,
    pty: bool,
) -> CommandIo {
    if pty {
        return CommandIo {
            stdin,
            stdout: OutputSink::stream(limit, move |b| out_hub.publish(Event::Pty(onlcr(b)))),
            stderr: OutputSink::stream(limit, move |b| err_hub.publish(Event::Pty(onlcr(b)))),
        };
    }
    CommandIo {
        stdin,
        stdout: OutputSink::stream(limit, move |b| out_hub.publish(Event::Stdout(b.to_vec()))),
        stderr: OutputSink::stream(limit, move |b| err_hub.publish(Event::Stderr(b.to_vec()))),
    }
}

/// What a process with a terminal finds in its environment besides the request's variables: the size
/// (`COLUMNS`, `LINES`) and a `TERM` unless the request gives them.
fn terminal_env(env: &mut Vec<(String, String)>, size: PtySize) {
    for (name, value) in [
        ("COLUMNS", size.cols.to_string()),
        ("LINES", size.rows.to_string()),
        ("TERM", "xterm-256color".to_owned()),
    ] {
        if !env.iter().any(|(k, _)| k == name) {
            env.push((name.to_owned(), value));
        }
    }
}

/// Why a client's stream of a command ends when a pause suspends the command.
const SUSPENDED: &str = "the sandbox was paused: the process was saved with it and continues after the \
                         sandbox resumes (connect to it again by its pid)";

/// Runs `command` (process `pid` of sandbox `id`) on a thread of its own until it ends, then publishes its
/// end to `hub` and forgets it; a command suspended by a pause ends its clients' streams with an error.
fn run_in_background(
    table: ProcessTable,
    id: &str,
    pid: u32,
    command: stasis::Command,
    hub: Arc<Hub>,
    log: SandboxLog,
) -> std::io::Result<()> {
    let sandbox = id.to_owned();
    std::thread::Builder::new()
        .name(format!("stasis-cmd-{pid}"))
        .spawn(move || {
            let output = command.run();
            table.remove_run(&sandbox, pid, &hub);
            if output.suspended {
                tracing::debug!(sandbox = %sandbox, pid, "command suspended by a pause");
                hub.interrupt(SUSPENDED);
                return;
            }
            tracing::debug!(sandbox = %sandbox, pid, exit_code = output.exit_code, "command ended");
            let level = if output.exit_code == 0 {
                Level::Info
            } else {
                Level::Warn
            };
            log.append(
                &LogEvent::now(level, "command_ended", "Command ended")
                    .with("pid", pid)
                    .with("exitCode", output.exit_code),
            );
            let mut end = json!({
                "exitCode": output.exit_code,
                "exited": true,
                "status": format!("exit status {}", output.exit_code),
            });
            if let Some(trap) = output.trap {
                end["error"] = json!(trap);
            }
            hub.finish(end);
        })
        .map(drop)
}

/// The resume hook of the server ([`stasis::lifecycle::ResumeHook`]): the commands a pause suspended in
/// sandbox `id` continue, under their old pids, tags and configurations (so `List` shows them and `Connect`
/// re-attaches), and a code-interpreter cell that was running finishes in the background.
pub fn continue_suspended(
    table: &ProcessTable,
    id: &str,
    sandbox: &mut stasis::Sandbox,
    log: &SandboxLog,
) {
    for info in sandbox.suspended() {
        match info.kind {
            stasis::ProcessKind::Command => {
                let Ok(CommandLabel { command: saved }) = serde_json::from_str(&info.label) else {
                    tracing::warn!(sandbox = %id, pid = info.pid, "a suspended command has no label of ours; it stays suspended");
                    continue;
                };
                let hub = Arc::new(Hub::default());
                let pipe = saved.stdin.then(|| StdinPipe::new(STDIN_CAPACITY));
                let io = streams(
                    sandbox.limits().max_output_bytes,
                    pipe.map_or(Stdin::Empty, Stdin::Pipe),
                    hub.clone(),
                    hub.clone(),
                    saved.pty.is_some(),
                );
                let command = match sandbox.continue_command(info.pid, io) {
                    Ok(command) => command,
                    Err(error) => {
                        tracing::warn!(sandbox = %id, pid = saved.pid, error = %crate::error::chain(&error), "a suspended command could not continue");
                        continue;
                    }
                };
                // New pids must not collide with the ones that came back.
                NEXT_PID.fetch_max(saved.pid.saturating_add(1), Ordering::Relaxed);
                table.insert(
                    id,
                    Entry {
                        pid: saved.pid,
                        tag: saved.tag,
                        config: saved.config,
                        control: command.control(),
                        hub: hub.clone(),
                        pty: saved.pty.map(|size| Arc::new(Pty::new(size))),
                    },
                );
                let run =
                    run_in_background(table.clone(), id, saved.pid, command, hub, log.clone());
                if let Err(error) = run {
                    table.remove(id, saved.pid);
                    tracing::warn!(sandbox = %id, pid = saved.pid, %error, "a suspended command could not be started again");
                } else {
                    tracing::debug!(sandbox = %id, pid = saved.pid, "suspended command continues");
                }
            }
            stasis::ProcessKind::Reactor => match sandbox.continue_call(info.pid) {
                Ok(call) => {
                    let sandbox_id = id.to_owned();
                    let spawned = std::thread::Builder::new()
                        .name(format!("stasis-call-{}", info.pid))
                        .spawn(move || {
                            let output = call.run();
                            tracing::debug!(sandbox = %sandbox_id, ok = output.result.is_ok(), "a suspended call finished after the resume");
                        });
                    if let Err(error) = spawned {
                        tracing::warn!(sandbox = %id, %error, "a suspended call could not continue");
                    }
                }
                Err(error) => {
                    tracing::warn!(sandbox = %id, pid = info.pid, %error, "a suspended call could not continue");
                }
            },
        }
    }
    // Programs whose command ended before the pause (orphans) continue on their own.
    let orphans = sandbox.continue_children();
    if orphans > 0 {
        tracing::debug!(sandbox = %id, orphans, "suspended programs continue");
    }
}

/// `POST /process.Process/Connect` (server streaming): the events of a running process from now on.
pub async fn connect_process(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let attached = find(&state, &headers, body).and_then(|(entry, _)| {
        entry
            .hub
            .subscribe()
            .map(|events| (entry.pid, events))
            .ok_or_else(|| not_found(&Selector::Pid(entry.pid)))
    });
    match attached {
        Ok((pid, events)) => event_stream(pid, events, keepalive_interval(&headers)),
        Err(error) => stream_error(&error),
    }
}

/// Client pids of the programs that the sandbox's processes started (a shell running `python3`): the
/// kernel's pid plus this offset, a range the server's own pids (counted up from 1000 for the commands it
/// starts) do not reach, so the two never collide.
pub const CHILD_PID_OFFSET: u32 = 1 << 30;

/// `POST /process.Process/List`: the sandbox's running processes — the commands started through this API
/// and the programs they started.
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ConnectError> {
    let id = envd_sandbox(&state, &headers)?;
    let mut processes: Vec<serde_json::Value> = state
        .processes()
        .list(&id)
        .iter()
        .map(|e| {
            let mut info = json!({ "pid": e.pid, "config": e.config });
            if let Some(tag) = &e.tag {
                info["tag"] = json!(tag);
            }
            info
        })
        .collect();
    let manager = state.manager().clone();
    let sandbox = id.clone();
    // A paused sandbox runs nothing: only the commands above, which the resume continues, are listed.
    let children = blocking(move || manager.with_sandbox(&sandbox, |s| s.children()))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    processes.extend(children.into_iter().filter(|c| c.running).map(|c| {
        let (cmd, args) = c
            .args
            .split_first()
            .map_or((c.program.as_str(), &[][..]), |(cmd, rest)| {
                (cmd.as_str(), rest)
            });
        json!({
            "pid": CHILD_PID_OFFSET.saturating_add(c.pid),
            "config": { "cmd": cmd, "args": args, "envs": {}, "cwd": c.cwd },
        })
    }));
    Ok(Json(json!({ "processes": processes })))
}

/// `POST /process.Process/SendInput`: appends bytes to a process's stdin, or types them into its terminal.
pub async fn send_input(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ConnectError> {
    let (entry, request) = find(&state, &headers, body)?;
    let input = request
        .input
        .ok_or_else(|| ConnectError::new(Code::InvalidArgument, "input is missing"))?;
    write_input(&entry, &input)?;
    Ok(Json(json!({})))
}

/// `POST /process.Process/CloseStdin`: the process reads end-of-file after what it was sent.
pub async fn close_stdin(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ConnectError> {
    let (entry, _) = find(&state, &headers, body)?;
    // A process started without stdin reads end-of-file already: closing it is harmless.
    if let Some(pipe) = entry.control.stdin() {
        pipe.close();
    }
    Ok(Json(json!({})))
}

/// `POST /process.Process/SendSignal`: SIGKILL or SIGTERM ends the process (it cannot catch either) —
/// a command started through this API, or a program one of them started ([`CHILD_PID_OFFSET`]).
pub async fn send_signal(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ConnectError> {
    let id = envd_sandbox(&state, &headers)?;
    let body = body.map_err(|r| ConnectError::from(ApiError::new(r.status(), r.body_text())))?;
    let request: ProcessSelectorRequest = connect::decode(&headers, &body)?;
    let reason = match request.signal.as_ref() {
        Some(v) if v == "SIGNAL_SIGKILL" || v == 9 => StopReason::Kill,
        Some(v) if v == "SIGNAL_SIGTERM" || v == 15 => StopReason::Terminate,
        other => {
            return Err(ConnectError::new(
                Code::InvalidArgument,
                format!("unsupported signal {other:?}: send SIGNAL_SIGKILL or SIGNAL_SIGTERM"),
            ));
        }
    };
    let selector = selector(&request.process)?;
    if let Selector::Pid(pid) = selector
        && let Some(child) = pid.checked_sub(CHILD_PID_OFFSET).filter(|p| *p > 0)
    {
        let manager = state.manager().clone();
        let stopped = blocking(move || manager.with_sandbox(&id, |s| s.stop_child(child, reason)))
            .await
            .map_err(ConnectError::from)?
            .map_err(lifecycle_error)?;
        return if stopped {
            Ok(Json(json!({})))
        } else {
            Err(not_found(&selector))
        };
    }
    let entry = state
        .processes()
        .find(&id, &selector)
        .ok_or_else(|| not_found(&selector))?;
    entry.control.stop(reason);
    Ok(Json(json!({})))
}

/// `POST /process.Process/Update`: resizes the terminal of a process started with a PTY.
pub async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ConnectError> {
    let (entry, request) = find(&state, &headers, body)?;
    let size = request
        .pty
        .as_ref()
        .ok_or_else(|| ConnectError::new(Code::InvalidArgument, "pty (the new size) is missing"))
        .and_then(|pty| {
            PtySize::from_pty_json(pty)
                .map_err(|e| ConnectError::new(Code::InvalidArgument, e.to_string()))
        })?;
    let pty = entry.pty.as_ref().ok_or_else(|| no_pty(entry.pid))?;
    pty.resize(size);
    Ok(Json(json!({})))
}

/// The process was started without a terminal.
fn no_pty(pid: u32) -> ConnectError {
    ConnectError::new(
        Code::FailedPrecondition,
        format!("process {pid} was started without a PTY"),
    )
}

/// `POST /process.Process/StreamInput` (client streaming): a `start` message naming the process, then
/// `data` messages written to its stdin in order (keepalives ignored). Answered once the whole request
/// has been read.
pub async fn stream_input(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match stream_input_messages(&state, &headers, body) {
        Ok(()) => {
            let mut reply = envelope(0, b"{}");
            reply.extend(end_stream(None));
            connect::stream_response(reply)
        }
        Err(error) => stream_error(&error),
    }
}

fn stream_input_messages(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(), ConnectError> {
    let id = envd_sandbox(state, headers)?;
    let body = body.map_err(|r| ConnectError::from(ApiError::new(r.status(), r.body_text())))?;
    let mut entry = None;
    for message in envelopes(&body)? {
        let message: serde_json::Value = serde_json::from_slice(message).map_err(|e| {
            ConnectError::new(Code::InvalidArgument, format!("invalid message: {e}"))
        })?;
        if let Some(start) = message.get("start") {
            let selector = selector(start.get("process").unwrap_or(&json!(null)))?;
            entry = Some(
                state
                    .processes()
                    .find(&id, &selector)
                    .ok_or_else(|| not_found(&selector))?,
            );
        } else if let Some(data) = message.get("data") {
            let entry = entry.as_ref().ok_or_else(|| {
                ConnectError::new(Code::InvalidArgument, "data before the start message")
            })?;
            write_input(entry, data.get("input").unwrap_or(&json!(null)))?;
        }
    }
    Ok(())
}

/// The payloads of a request made of envelopes (the end-of-stream one included, if any).
fn envelopes(mut body: &[u8]) -> Result<Vec<&[u8]>, ConnectError> {
    let mut messages = Vec::new();
    while let Some(envelope) = connect::next_envelope(body)? {
        if envelope.flags & END_STREAM == 0 {
            messages.push(envelope.payload);
        }
        body = envelope.rest;
    }
    Ok(messages)
}

/// Writes `ProcessInput` to the process: `{"stdin": "<base64>"}` to its stdin pipe, `{"pty": "<base64>"}`
/// through its terminal.
fn write_input(entry: &Entry, input: &serde_json::Value) -> Result<(), ConnectError> {
    let field = |name: &str| -> Result<Option<Vec<u8>>, ConnectError> {
        let Some(data) = input.get(name) else {
            return Ok(None);
        };
        let data = data.as_str().ok_or_else(|| {
            ConnectError::new(
                Code::InvalidArgument,
                format!("input.{name} must be base64"),
            )
        })?;
        BASE64
            .decode(data)
            .map(Some)
            .map_err(|e| ConnectError::new(Code::InvalidArgument, format!("input.{name}: {e}")))
    };
    if let Some(bytes) = field("pty")? {
        return type_into(entry, &bytes);
    }
    let Some(bytes) = field("stdin")? else {
        return Err(ConnectError::new(
            Code::InvalidArgument,
            "input.stdin or input.pty (base64) is required",
        ));
    };
    if entry.pty.is_some() {
        return Err(ConnectError::new(
            Code::FailedPrecondition,
            format!(
                "process {} has a PTY: send its input as input.pty",
                entry.pid
            ),
        ));
    }
    write_stdin(entry, |pipe| pipe.write(&bytes))
}

/// Types `bytes` into the terminal of `entry`: the echo goes to its streams, finished lines to its stdin.
fn type_into(entry: &Entry, bytes: &[u8]) -> Result<(), ConnectError> {
    let pty = entry.pty.as_ref().ok_or_else(|| no_pty(entry.pid))?;
    pty.feed(bytes, |action| match action {
        Action::Echo(echo) => {
            entry.hub.publish(Event::Pty(echo));
            Ok(())
        }
        Action::Input(line) => write_stdin(entry, |pipe| pipe.write(&line)),
        Action::Eof => write_stdin(entry, StdinPipe::write_eof),
        Action::Interrupt => write_stdin(entry, |pipe| {
            // As a terminal's Ctrl-C flushes what was typed ahead, then signals the process.
            pipe.discard();
            entry.control.interrupt();
            Ok(())
        }),
    })
}

/// Runs `write` on the process's stdin pipe, its errors as the client is to see them.
fn write_stdin(
    entry: &Entry,
    write: impl FnOnce(&StdinPipe) -> Result<(), PipeError>,
) -> Result<(), ConnectError> {
    let pipe = entry.control.stdin().ok_or_else(|| {
        ConnectError::new(
            Code::FailedPrecondition,
            format!(
                "process {} was started without stdin (start it with \"stdin\": true)",
                entry.pid
            ),
        )
    })?;
    write(pipe).map_err(|e| match e {
        PipeError::Closed => ConnectError::new(
            Code::FailedPrecondition,
            format!("the stdin of process {} is closed", entry.pid),
        ),
        full @ PipeError::Full { .. } => {
            ConnectError::new(Code::ResourceExhausted, full.to_string())
        }
    })
}

/// The request's process, found in the sandbox's table.
fn find(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Arc<Entry>, ProcessSelectorRequest), ConnectError> {
    let id = envd_sandbox(state, headers)?;
    let body = body.map_err(|r| ConnectError::from(ApiError::new(r.status(), r.body_text())))?;
    let request: ProcessSelectorRequest = connect::decode(headers, &body)?;
    let selector = selector(&request.process)?;
    let entry = state
        .processes()
        .find(&id, &selector)
        .ok_or_else(|| not_found(&selector))?;
    Ok((entry, request))
}

/// `ProcessSelector` from its JSON: `{"pid": N}` (a number or, as proto3 JSON allows, a string) or
/// `{"tag": "…"}`.
fn selector(process: &serde_json::Value) -> Result<Selector, ConnectError> {
    if let Some(pid) = process.get("pid") {
        let pid = pid
            .as_u64()
            .or_else(|| pid.as_str().and_then(|s| s.parse().ok()))
            .and_then(|p| u32::try_from(p).ok())
            .ok_or_else(|| ConnectError::new(Code::InvalidArgument, format!("bad pid {pid}")))?;
        return Ok(Selector::Pid(pid));
    }
    if let Some(tag) = process.get("tag").and_then(|t| t.as_str()) {
        return Ok(Selector::Tag(tag.to_owned()));
    }
    Err(ConnectError::new(
        Code::InvalidArgument,
        "process must name a pid or a tag",
    ))
}

/// No running process answers to `selector`: the SDKs read this as "already finished".
fn not_found(selector: &Selector) -> ConnectError {
    ConnectError::new(Code::NotFound, format!("process with {selector} not found"))
}

/// The keepalive interval the client asked for (`Keepalive-Ping-Interval`, seconds, 1 to 3600).
fn keepalive_interval(headers: &HeaderMap) -> Duration {
    headers
        .get(KEEPALIVE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.clamp(1, 3600)))
        .unwrap_or(DEFAULT_KEEPALIVE)
}

/// What the response stream still has to send.
struct StreamState {
    pid: u32,
    events: UnboundedReceiver<Event>,
    keepalive: tokio::time::Interval,
    /// An event received while merging output of another stream, sent next.
    pending: Option<Event>,
    started: bool,
    done: bool,
}

/// The streaming response of `Start` and `Connect`: `start`, then each event as it comes (output merged
/// up to [`MAX_DATA_EVENT`] when it arrives faster than it is sent), keepalives while nothing happens,
/// and after `end` the end-of-stream envelope.
fn event_stream(pid: u32, events: UnboundedReceiver<Event>, keepalive: Duration) -> Response {
    let state = StreamState {
        pid,
        events,
        keepalive: tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive),
        pending: None,
        started: false,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let frame = next_frame(&mut st).await;
        Some((Ok::<_, Infallible>(Bytes::from(frame)), st))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, STREAM_CONTENT_TYPE)],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn next_frame(st: &mut StreamState) -> Vec<u8> {
    let event =
        |event: serde_json::Value| envelope(0, json!({ "event": event }).to_string().as_bytes());
    if !st.started {
        st.started = true;
        return event(json!({ "start": { "pid": st.pid } }));
    }
    let next = match st.pending.take() {
        Some(pending) => Some(pending),
        None => tokio::select! {
            next = st.events.recv() => next,
            _ = st.keepalive.tick() => return event(json!({ "keepalive": {} })),
        },
    };
    match next {
        Some(Event::Stdout(bytes)) => event(data("stdout", merge(st, bytes, Stream::Stdout))),
        Some(Event::Stderr(bytes)) => event(data("stderr", merge(st, bytes, Stream::Stderr))),
        Some(Event::Pty(bytes)) => event(data("pty", merge(st, bytes, Stream::Pty))),
        Some(Event::End(end)) => {
            st.done = true;
            let mut frame = event(json!({ "end": end }));
            frame.extend(end_stream(None));
            frame
        }
        Some(Event::Interrupted(why)) => {
            st.done = true;
            end_stream(Some(&ConnectError::new(Code::Unavailable, why)))
        }
        None => {
            st.done = true;
            end_stream(Some(&ConnectError::new(
                Code::Internal,
                "the process's event stream ended without an end event",
            )))
        }
    }
}

/// Which output a data event carries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
    Pty,
}

/// Appends the output of the same stream already waiting, up to [`MAX_DATA_EVENT`].
fn merge(st: &mut StreamState, mut bytes: Vec<u8>, stream: Stream) -> Vec<u8> {
    while bytes.len() < MAX_DATA_EVENT {
        match st.events.try_recv() {
            Ok(Event::Stdout(more)) if stream == Stream::Stdout => bytes.extend(more),
            Ok(Event::Stderr(more)) if stream == Stream::Stderr => bytes.extend(more),
            Ok(Event::Pty(more)) if stream == Stream::Pty => bytes.extend(more),
            Ok(other) => {
                st.pending = Some(other);
                break;
            }
            Err(_) => break,
        }
    }
    bytes
}

fn data(name: &str, bytes: Vec<u8>) -> serde_json::Value {
    json!({ "data": { name: BASE64.encode(bytes) } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_take_numbers_strings_and_tags() {
        assert_eq!(selector(&json!({"pid": 7})), Ok(Selector::Pid(7)));
        assert_eq!(selector(&json!({"pid": "8"})), Ok(Selector::Pid(8)));
        assert_eq!(
            selector(&json!({"tag": "t"})),
            Ok(Selector::Tag("t".into()))
        );
        for bad in [
            json!({}),
            json!({"pid": -1}),
            json!({"pid": "x"}),
            json!(null),
        ] {
            assert_eq!(
                selector(&bad).map_err(|e| e.code),
                Err(Code::InvalidArgument),
                "{bad}"
            );
        }
    }

    #[test]
    fn request_envelopes_are_split_and_checked() {
        let mut wire = envelope(0, b"{\"a\":1}");
        wire.extend(envelope(0, b"{}"));
        wire.extend(end_stream(None));
        assert_eq!(envelopes(&wire).ok(), Some(vec![&b"{\"a\":1}"[..], b"{}"]));
        assert!(envelopes(&[0, 0, 0]).is_err());
        assert!(envelopes(&[0, 0, 0, 0, 5, b'{']).is_err());
        assert!(envelopes(&[1, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn keepalive_interval_is_bounded() {
        let mut headers = HeaderMap::new();
        assert_eq!(keepalive_interval(&headers), DEFAULT_KEEPALIVE);
        headers.insert(KEEPALIVE_HEADER, "0".parse().expect("header"));
        assert_eq!(keepalive_interval(&headers), Duration::from_secs(1));
        headers.insert(KEEPALIVE_HEADER, "nope".parse().expect("header"));
        assert_eq!(keepalive_interval(&headers), DEFAULT_KEEPALIVE);
    }
}
