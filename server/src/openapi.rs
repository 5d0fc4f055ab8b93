//! The OpenAPI 3 document of the control plane, generated from the handlers' `#[utoipa::path]`
//! annotations. The control router is built from the same annotations ([`control_plane`]), so a route
//! cannot be served without being documented, nor documented without being served.

use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{blobs, metrics, sandboxes};
use crate::state::AppState;

/// The name of the API-key security scheme in the document (spelled out in `ApiDoc`'s `security` too,
/// which takes only a literal).
pub const API_KEY_SCHEME: &str = "api_key";

/// The document's fixed part: title, version, tags and the security scheme; paths come from the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Stasis control plane",
        description = "E2B/Novita-compatible sandbox lifecycle, plus blob export/import and metrics. \
                       The envd plane (Connect `process.Process`, `filesystem.Filesystem`, `/files`) is \
                       described in docs/sdk-compat.md."
    ),
    modifiers(&ApiKeyScheme),
    security(("api_key" = [])),
    tags(
        (name = "sandboxes", description = "Create, list, pause, resume (connect), kill"),
        (name = "snapshots", description = "Immutable snapshots and forks"),
        (name = "blobs", description = "Moving a paused sandbox between servers"),
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
        .routes(routes!(sandboxes::snapshot))
        .routes(routes!(sandboxes::fork))
        .routes(routes!(sandboxes::list_snapshots))
        .routes(routes!(sandboxes::delete_snapshot))
        .routes(routes!(blobs::export))
        .routes(routes!(blobs::import))
        .routes(routes!(metrics::scrape))
}

/// The OpenAPI document of the control plane, as served at `GET /openapi.json`.
pub fn document() -> Document {
    control_plane().into_openapi()
}
