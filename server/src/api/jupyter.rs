//! The code-interpreter plane (sdk-compat.md §4), served on the sandbox's origin like envd: `POST /execute`
//! answers a cell's events as NDJSON, and `/contexts` creates, lists, restarts and removes contexts. The
//! sandbox is named by its sandbox-id header and authorized by its access token
//! ([`crate::auth::jupyter_sandbox`]); the work is [`crate::interpreter`]'s.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use stasis::Sandbox;
use stasis_guest::interpreter::ExecuteRequest;

use super::{blocking, json_body};
use crate::auth::jupyter_sandbox;
use crate::error::ApiError;
use crate::interpreter::{self, CellOutcome, ContextError, ContextInfo, Language, Started, Target};

/// Longest a cell waits for its context to finish the cells before it.
const MAX_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(600);
use crate::state::AppState;
use crate::time::rfc3339;

/// Body of `POST /execute`.
#[derive(Debug, Default, Deserialize)]
pub struct ExecuteBody {
    /// The cell's source.
    #[serde(default)]
    pub code: String,
    /// The context to run it in; the language's default context when absent.
    pub context_id: Option<String>,
    /// The language of the default context to use; Python when absent.
    pub language: Option<String>,
    /// Variables visible to this cell only.
    pub env_vars: Option<BTreeMap<String, String>>,
}

/// Body of `POST /contexts`.
#[derive(Debug, Default, Deserialize)]
pub struct NewContext {
    /// Python when absent.
    pub language: Option<String>,
    /// The context's working directory; `/home/user` when absent.
    pub cwd: Option<String>,
}

/// `POST /execute`: runs one cell and answers its events, one JSON object per line, no blank lines:
/// `stdout`/`stderr` lines, `result`s, an `error`, `number_of_executions`, then `end_of_execution`.
pub async fn execute(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = jupyter_sandbox(&state, &headers)?;
    let body: ExecuteBody = json_body(body)?;
    let target = match (&body.context_id, &body.language) {
        (Some(context), _) if !context.is_empty() => Target::Context(context.clone()),
        (_, language) => Target::Default(Language::parse(language.as_deref()).map_err(refusal)?),
    };
    let request = ExecuteRequest {
        code: body.code,
        env_vars: body.env_vars.unwrap_or_default(),
    };
    // The cell runs outside the sandbox's lock, so the sandbox can be paused meanwhile (the cell is then
    // suspended with it); a context busy with another cell is waited for, as a kernel queues cells.
    let waited_since = std::time::Instant::now();
    let outcome = loop {
        let (target, request) = (target.clone(), request.clone());
        let started = on_interpreter(&state, id.clone(), move |sandbox, interpreters| {
            interpreter::start_execute(sandbox, interpreters, &target, &request)
        })
        .await?;
        match started {
            Started::Call { call, context } => {
                let output = blocking(move || call.run()).await?;
                break interpreter::finish_execute(&context, output).map_err(refusal)?;
            }
            Started::Busy(control) => {
                if waited_since.elapsed() > MAX_QUEUE_WAIT {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "the context has been busy with another cell for too long",
                    ));
                }
                blocking(move || control.wait_timeout(std::time::Duration::from_secs(1))).await?;
            }
            Started::Done(outcome) => break outcome,
        }
    };
    Ok(ndjson(&events(&outcome)))
}

/// `GET /contexts`: the sandbox's contexts.
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<ContextInfo>>, ApiError> {
    let id = jupyter_sandbox(&state, &headers)?;
    let contexts = on_interpreter(&state, id, |sandbox, _| Ok(interpreter::list(sandbox))).await?;
    Ok(Json(contexts))
}

/// `POST /contexts`: a new context, `{"id", "language", "cwd"}`.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ContextInfo>, ApiError> {
    let id = jupyter_sandbox(&state, &headers)?;
    let body: NewContext = json_body(body)?;
    let language = Language::parse(body.language.as_deref()).map_err(refusal)?;
    let context = on_interpreter(&state, id, move |sandbox, interpreters| {
        interpreter::create(sandbox, interpreters, language, body.cwd.as_deref())
    })
    .await?;
    Ok(Json(context))
}

/// `DELETE /contexts/{id}`: 204, or 404 for an unknown context.
pub async fn remove(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(context): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = jupyter_sandbox(&state, &headers)?;
    on_interpreter(&state, id, move |sandbox, _| {
        interpreter::remove(sandbox, &context)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /contexts/{id}/restart`: the context with a fresh interpreter (its variables gone).
pub async fn restart(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(context): Path<String>,
) -> Result<Json<ContextInfo>, ApiError> {
    let id = jupyter_sandbox(&state, &headers)?;
    let context = on_interpreter(&state, id, move |sandbox, interpreters| {
        interpreter::restart(sandbox, interpreters, &context)
    })
    .await?;
    Ok(Json(context))
}

/// Runs `work` on sandbox `id` off the async workers, under its lock (resuming it first if its policy
/// says so), once it is known to be a code-interpreter sandbox.
async fn on_interpreter<R: Send + 'static>(
    state: &AppState,
    id: String,
    work: impl FnOnce(&mut Sandbox, &interpreter::Interpreters) -> Result<R, ContextError>
    + Send
    + 'static,
) -> Result<R, ApiError> {
    let info = state.manager().info(&id)?;
    interpreter::require_interpreter(&info.template).map_err(refusal)?;
    let manager = state.manager().clone();
    let interpreters = state.interpreters().clone();
    let outcome = blocking(move || manager.with_sandbox(&id, |s| work(s, &interpreters))).await??;
    outcome.map_err(refusal)
}

/// The status and message of a failed context operation.
fn refusal(error: ContextError) -> ApiError {
    match &error {
        ContextError::UnsupportedLanguage(_) | ContextError::NotAnInterpreterSandbox(_) => {
            ApiError::bad_request(error.to_string())
        }
        ContextError::UnknownContext(_) => ApiError::not_found(error.to_string()),
        ContextError::Exists(_) => ApiError::new(StatusCode::CONFLICT, error.to_string()),
        ContextError::Spawn(stasis::SpawnError::TooManyProcesses(_)) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{error}: {}", crate::error::chain(&error)),
        ),
        // Killed under the cell (by a client, or by its timeout while the cell ran): what the proxy in front
        // of E2B's envd answers for a sandbox that is gone, which the SDKs turn into their timeout or
        // "not running" exception rather than an internal error.
        ContextError::Call(stasis::CallError::Stopped(stasis::wasi::StopReason::SandboxGone)) => {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "the sandbox was not found: it was killed or reached its timeout while the cell ran",
            )
        }
        ContextError::Spawn(_)
        | ContextError::Call(_)
        | ContextError::BadResponse(_)
        | ContextError::Load(_)
        | ContextError::NotRegistered(_) => ApiError::internal(&error),
    }
}

/// The NDJSON lines of a cell's outcome, in the order Jupyter streams them.
pub fn events(outcome: &CellOutcome) -> Vec<serde_json::Value> {
    let now = rfc3339(std::time::SystemTime::now());
    let mut events = Vec::new();
    for (kind, text) in [("stdout", &outcome.stdout), ("stderr", &outcome.stderr)] {
        // One event per line, each keeping its newline, as a kernel's stream messages arrive.
        for line in text.split_inclusive('\n') {
            events.push(json!({ "type": kind, "text": line, "timestamp": now }));
        }
    }
    for result in &outcome.response.results {
        events.push(json!({
            "type": "result",
            "text": result.text,
            "is_main_result": result.is_main_result,
        }));
    }
    if let Some(error) = &outcome.response.error {
        events.push(json!({
            "type": "error",
            "name": error.name,
            "value": error.value,
            "traceback": error.traceback,
        }));
    }
    if outcome.counted {
        events.push(json!({
            "type": "number_of_executions",
            "execution_count": outcome.response.execution_count,
        }));
    }
    events.push(json!({ "type": "end_of_execution" }));
    events
}

/// `events` as an `application/x-ndjson` body: one compact JSON object per line, no blank lines.
fn ndjson(events: &[serde_json::Value]) -> Response {
    let mut body = String::new();
    for event in events {
        body.push_str(&event.to_string());
        body.push('\n');
    }
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from(body),
    )
        .into_response()
}
