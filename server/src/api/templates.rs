//! User templates over HTTP: `POST /templates?name=NAME` registers a wasm module (see
//! [`crate::templates`] for the rules and how it is stored), `GET /templates` lists every template,
//! built-in ones included. Templates are server-wide: every API key sees and can use all of them.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use stasis::{ModuleKind, Template};
use utoipa::ToSchema;

use super::blocking;
use crate::error::{ApiError, ErrorJson, chain};
use crate::state::AppState;
use crate::templates::{RegisterError, Registered, is_built_in};

/// A template as `POST /templates` and `GET /templates` return it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateJson {
    /// The template's name, what `POST /sandboxes` takes as `templateID`.
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// The sha256 of its wasm module, in hex.
    pub sha256: String,
    /// `command` (exports `_start`: runs when a process is started with its name) or `reactor` (its
    /// process starts with the sandbox and is paused and resumed with it).
    #[schema(value_type = String)]
    pub kind: &'static str,
    /// Whether the server registers it itself (then it cannot be replaced); absent from the answer to a
    /// registration, which is never of a built-in one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub built_in: Option<bool>,
}

impl TemplateJson {
    fn new(template: &Template, built_in: Option<bool>) -> Self {
        Self {
            template_id: template.name().to_owned(),
            sha256: template.sha256_hex(),
            kind: match template.kind() {
                ModuleKind::Command => "command",
                ModuleKind::Reactor => "reactor",
            },
            built_in,
        }
    }
}

/// `POST /templates?name=NAME`, body = a wasm module: registers it as the template `NAME` and stores it
/// so it survives a restart. 201 when new; 200 when the same module already had this name (nothing
/// changes, so a client may retry freely). The request body limit applies.
#[utoipa::path(post, path = "/templates", tag = "templates", operation_id = "register_template",
    params(("name" = String, Query, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$",
        description = "The template's name: `^[a-z0-9][a-z0-9._-]{0,62}$`")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "The wasm module (sent as `application/wasm` it is read the same way)"),
    responses((status = 201, description = "Registered", body = TemplateJson),
        (status = 200, description = "This module already had this name", body = TemplateJson),
        (status = 400, description = "Bad or missing name, or a module the runtime refuses (the \
            message says why)", body = ErrorJson),
        (status = 409, description = "A built-in name, a name taken by another module, or a module \
            registered under another name", body = ErrorJson),
        (status = 413, description = "The module is larger than the body limit", body = ErrorJson),
        (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn register(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let name = name_param(query.as_deref().unwrap_or(""))?;
    let wasm =
        body.map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))?;
    let worker = state.clone();
    let registered = blocking(move || {
        let taken = worker.interpreters().hashes();
        worker
            .templates()
            .register(worker.manager(), &taken, &name, &wasm)
    })
    .await?
    .map_err(register_error)?;
    let status = match &registered {
        Registered::Created(template) => {
            tracing::info!(template = template.name(), sha256 = %template.sha256_hex(),
                kind = ?template.kind(), "template registered");
            StatusCode::CREATED
        }
        Registered::Existing(_) => StatusCode::OK,
    };
    let body = TemplateJson::new(registered.template(), None);
    Ok((status, axum::Json(body)).into_response())
}

/// `GET /templates`: every registered template, built-in and user ones, by name.
#[utoipa::path(get, path = "/templates", tag = "templates", operation_id = "list_templates",
    responses((status = 200, description = "The templates", body = Vec<TemplateJson>),
        (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn list(State(state): State<AppState>) -> axum::Json<Vec<TemplateJson>> {
    let manager = state.manager();
    let items = manager
        .template_names()
        .iter()
        .filter_map(|name| manager.template(name))
        .map(|t| {
            let built_in = is_built_in(t.name());
            TemplateJson::new(&t, Some(built_in))
        })
        .collect();
    axum::Json(items)
}

/// The `name` of the query string; 400 when it is missing or the query does not decode.
fn name_param(raw: &str) -> Result<String, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
    pairs
        .into_iter()
        .find(|(key, _)| key == "name")
        .map(|(_, value)| value)
        .ok_or_else(|| ApiError::bad_request("the query parameter `name` is required"))
}

/// The status of a refused registration; a refused module's message carries the whole reason chain.
fn register_error(error: RegisterError) -> ApiError {
    match &error {
        RegisterError::InvalidName(_) => ApiError::bad_request(error.to_string()),
        RegisterError::Module(_) => ApiError::bad_request(chain(&error)),
        RegisterError::Reserved(_)
        | RegisterError::Taken(_)
        | RegisterError::DuplicateModule(_) => {
            ApiError::new(StatusCode::CONFLICT, error.to_string())
        }
        RegisterError::Store(_) | RegisterError::Register(_) => ApiError::internal(&error),
    }
}
