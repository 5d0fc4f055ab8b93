//! The OpenAPI 3 document of the control plane, generated from the handlers' `#[utoipa::path]`
//! annotations. The control router is built from the same annotations ([`control_plane`]), so a route
//! cannot be served without being documented, nor documented without being served. The document's
//! links (which response feeds which operation's `{id}`) are derived from the response schemas
//! ([`add_links`]), so a new operation on a sandbox is linked without anyone remembering to.

use axum::Router;
use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{blobs, logs, metrics, network, sandboxes, snapshots, templates, usage, volumes};
use crate::state::AppState;

/// The name of the API-key security scheme in the document (spelled out in `ApiDoc`'s `security` too,
/// which takes only a literal).
pub const API_KEY_SCHEME: &str = "api_key";

/// The document's fixed part: title, version, tags and the security scheme; paths come from the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Stasis control plane",
        description = "E2B/Novita-compatible sandbox lifecycle, plus blob export/import, user \
                       templates and metrics. The envd plane (Connect `process.Process`, \
                       `filesystem.Filesystem`, `/files`) is described in docs/sdk-compat.md."
    ),
    modifiers(&ApiKeyScheme),
    components(schemas(logs::Direction, logs::LeastLevel)),
    security(("api_key" = [])),
    tags(
        (name = "sandboxes", description = "Create, list, pause, resume (connect), kill"),
        (name = "snapshots", description = "Immutable snapshots and forks"),
        (name = "blobs", description = "Moving a paused sandbox between servers"),
        (name = "templates", description = "Registering wasm modules as templates"),
        (name = "volumes", description = "Named persistent directories mounted into sandboxes"),
        (name = "metrics", description = "Prometheus metrics"),
    )
)]
struct ApiDoc;

/// Declares the `X-API-KEY` header scheme every control-plane operation requires.
struct ApiKeyScheme;

impl Modify for ApiKeyScheme {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            API_KEY_SCHEME,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-KEY"))),
        );
    }
}

/// The control-plane routes with their documentation (no authentication layer yet: [`crate::app`] adds it).
pub fn control_plane() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(sandboxes::create, sandboxes::list))
        .routes(routes!(sandboxes::create_v2, sandboxes::list_v2))
        .routes(routes!(sandboxes::info, sandboxes::kill))
        .routes(routes!(sandboxes::pause))
        .routes(routes!(sandboxes::connect))
        .routes(routes!(sandboxes::connect_v2))
        .routes(routes!(sandboxes::set_timeout))
        .routes(routes!(sandboxes::refresh))
        .routes(routes!(sandboxes::resume))
        .routes(routes!(network::update))
        .routes(routes!(usage::sandbox_metrics))
        .routes(routes!(usage::bulk_metrics))
        .routes(routes!(logs::logs))
        .routes(routes!(logs::logs_v2))
        .routes(routes!(snapshots::snapshot))
        .routes(routes!(snapshots::fork))
        .routes(routes!(snapshots::clone))
        .routes(routes!(snapshots::list_snapshots))
        .routes(routes!(snapshots::delete_snapshot))
        .routes(routes!(snapshots::delete_template))
        .routes(routes!(volumes::create, volumes::list))
        .routes(routes!(volumes::info, volumes::destroy))
        .routes(routes!(blobs::export))
        .routes(routes!(blobs::import))
        .routes(routes!(templates::register, templates::list))
        .routes(routes!(metrics::scrape))
}

/// The control-plane router and its finished document (links added), as [`crate::app`] serves them.
///
/// The document is JSON rather than utoipa's model because the model serializes a link's fields in
/// snake case (`operation_id`), which OpenAPI tools reject; links are added to the JSON instead.
pub fn control_plane_parts() -> (Router<AppState>, serde_json::Value) {
    let (router, document) = control_plane().split_for_parts();
    let mut document = serde_json::to_value(&document).unwrap_or_default();
    add_links(&mut document);
    (router, document)
}

/// The OpenAPI document of the control plane, as served at `GET /openapi.json`.
pub fn document() -> serde_json::Value {
    control_plane_parts().1
}

/// Where the operations on one sandbox are.
const SANDBOX_PATHS: [&str; 2] = ["/sandboxes/{id}", "/v2/sandboxes/{id}"];

/// Which operations a returned object's id feeds: a sandbox's `sandboxID` every operation under
/// `/sandboxes/{id}`, a snapshot's `snapshotID` the ones under `/snapshots/{id}` and a fork (which
/// starts from a snapshot as well as from a sandbox). Clients and tools that follow links (schemathesis'
/// stateful phase) then reach pause, export and snapshot deletion with ids that exist.
const LINK_TARGETS: [(&str, &str, &[&str]); 2] = [
    ("SandboxJson", "sandboxID", &SANDBOX_PATHS),
    (
        "SnapshotJson",
        "snapshotID",
        &[
            "/snapshots/{id}",
            "/sandboxes/{id}/fork",
            "/sandboxes/{id}/clone",
        ],
    ),
];

/// Adds to every response that returns a sandbox or a snapshot (or, when created, a list of them: the
/// first one's id) a link to each operation its id feeds (see [`LINK_TARGETS`]); and to every bodiless
/// success of an operation on a sandbox, links to the operations on that same sandbox.
pub fn add_links(document: &mut serde_json::Value) {
    let Some(paths) = document.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let operations: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flat_map(|methods| methods.values())
                .filter_map(|op| op.get("operationId")?.as_str())
                .map(move |id| (path.clone(), id.to_owned()))
        })
        .collect();
    let responses = paths
        .iter_mut()
        .filter_map(|(path, item)| Some((path, item.as_object_mut()?)))
        .flat_map(|(path, methods)| methods.iter_mut().map(move |(m, op)| (path, m, op)))
        .filter_map(|(path, method, op)| {
            Some((path, method, op.get_mut("responses")?.as_object_mut()?))
        })
        .flat_map(|(path, method, responses)| {
            responses
                .iter_mut()
                .map(move |(status, r)| (path, method, status, r))
        });
    for (path, method, status, response) in responses {
        let returned = returned_schema(response);
        // An operation on a sandbox that succeeds without a body (pause, timeout) leaves the sandbox
        // there: its own id feeds the same operations a returned sandbox's would. Not after a delete.
        let same_sandbox = returned.is_none()
            && status.starts_with('2')
            && method != "delete"
            && SANDBOX_PATHS.iter().any(|p| path.starts_with(p));
        let (schema, prefix) = match returned {
            Some(returned) => returned,
            None if same_sandbox => ("SandboxJson".to_owned(), ""),
            None => continue,
        };
        // A list may be empty; what a 201 returns was just created, so it has a first element.
        if !prefix.is_empty() && status != "201" {
            continue;
        }
        let Some((_, field, targets)) = LINK_TARGETS.iter().find(|(s, ..)| *s == schema) else {
            continue;
        };
        let value = if same_sandbox {
            "$request.path.id".to_owned()
        } else {
            format!("$response.body#{prefix}/{field}")
        };
        let links: serde_json::Map<String, serde_json::Value> = operations
            .iter()
            .filter(|(path, _)| targets.iter().any(|t| path.starts_with(t)))
            .map(|(_, id)| {
                let link = serde_json::json!({"operationId": id, "parameters": {"id": value}});
                (id.clone(), link)
            })
            .collect();
        if let Some(response) = response.as_object_mut() {
            response.insert("links".to_owned(), links.into());
        }
    }
}

/// The component a JSON response returns, by name, and the JSON pointer prefix of the object in the
/// body: `""` for the object itself, `"/0"` for the first of an array of them.
fn returned_schema(response: &serde_json::Value) -> Option<(String, &'static str)> {
    let schema = response.pointer("/content/application~1json/schema")?;
    let (reference, prefix) = match schema.get("items") {
        Some(items) => (items.get("$ref")?, "/0"),
        None => (schema.get("$ref")?, ""),
    };
    let name = reference.as_str()?.rsplit('/').next()?;
    Some((name.to_owned(), prefix))
}
