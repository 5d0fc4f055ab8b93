//! The router: the control plane behind the API key (built with its OpenAPI document, served open at
//! `/openapi.json`), the envd plane behind per-sandbox access tokens, `/health` open, one body limit and
//! one request counter for all; in front of them, requests for a sandbox's port go to its guest
//! ([`crate::proxy`]).

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};

use crate::api::envd::{files, filesystem, process, watch};
use crate::api::{jupyter, volume_files};
use crate::auth::require_api_key;
use crate::error::ApiError;
use crate::metrics::track_requests;
use crate::openapi::control_plane_parts;
use crate::proxy;
use crate::state::AppState;

/// The whole HTTP service on `state`.
pub fn app(state: AppState) -> Router {
    let (control, document) = control_plane_parts();
    // Serialized once, and cloned by reference count: a handler holding the document as a JSON tree
    // cloned it deeply whenever the router was cloned (see `serve`) and on every request for it.
    let document = Bytes::from(serde_json::to_vec(&document).unwrap_or_default());
    let control = control.route_layer(from_fn_with_state(state.clone(), require_api_key));

    let envd = Router::new()
        .route("/files", get(files::download).post(files::upload))
        .route("/process.Process/Start", post(process::start))
        .route("/process.Process/Connect", post(process::connect_process))
        .route("/process.Process/StreamInput", post(process::stream_input))
        .route("/process.Process/List", post(process::list))
        .route("/process.Process/SendInput", post(process::send_input))
        .route("/process.Process/SendSignal", post(process::send_signal))
        .route("/process.Process/CloseStdin", post(process::close_stdin))
        .route("/process.Process/Update", post(process::update))
        .route("/filesystem.Filesystem/ListDir", post(filesystem::list_dir))
        .route(
            "/filesystem.Filesystem/Stat",
            post(filesystem::stat_handler),
        )
        .route("/filesystem.Filesystem/MakeDir", post(filesystem::make_dir))
        .route("/filesystem.Filesystem/WatchDir", post(watch::watch_dir))
        .route(
            "/filesystem.Filesystem/CreateWatcher",
            post(watch::create_watcher),
        )
        .route(
            "/filesystem.Filesystem/GetWatcherEvents",
            post(watch::get_watcher_events),
        )
        .route(
            "/filesystem.Filesystem/RemoveWatcher",
            post(watch::remove_watcher),
        )
        .route("/filesystem.Filesystem/Remove", post(filesystem::remove))
        .route(
            "/filesystem.Filesystem/Move",
            post(filesystem::move_handler),
        )
        // The code interpreter (Jupyter-style, port 49999 on E2B), on the same origin.
        .route("/execute", post(jupyter::execute))
        .route("/contexts", get(jupyter::list).post(jupyter::create))
        .route("/contexts/{id}", axum::routing::delete(jupyter::remove))
        .route("/contexts/{id}/restart", post(jupyter::restart))
        // The volume file API, authorized by each volume's own token.
        .route(
            "/volumecontent/{id}/file",
            get(volume_files::read_file).put(volume_files::write_file),
        )
        .route(
            "/volumecontent/{id}/dir",
            get(volume_files::list_dir).post(volume_files::make_dir),
        )
        .route(
            "/volumecontent/{id}/path",
            get(volume_files::stat_path)
                .delete(volume_files::remove)
                .patch(volume_files::update),
        );

    let limit = state.max_body_bytes();
    Router::new()
        .merge(control)
        .merge(envd)
        .route("/health", get(|| async { StatusCode::NO_CONTENT }))
        // Open like /health: the document describes the API, it reveals nothing about its sandboxes.
        .route(
            "/openapi.json",
            get(move || {
                let document = document.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], document) }
            }),
        )
        .fallback(|| async { ApiError::not_found("no such route") })
        // Before routing: a request for a sandbox's port may have any path, this server's own included.
        .layer(from_fn_with_state(state.clone(), proxy::route))
        .layer(from_fn_with_state(state.clone(), track_requests))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}
