//! `GET /metrics`: the Prometheus scrape endpoint (behind the API key, as sandbox counts and routes are
//! the operator's business).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::blocking;
use crate::error::{ApiError, ErrorJson};
use crate::state::AppState;

/// The content type of the OpenMetrics text format, which Prometheus scrapes.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics`: the OpenMetrics text exposition.
#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text",
            body = String),
        (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn scrape(State(state): State<AppState>) -> Result<Response, ApiError> {
    let scraped = state.clone();
    let text = blocking(move || scraped.metrics().encode(scraped.manager()))
        .await?
        .map_err(|e| ApiError::internal(&e))?;
    Ok(([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response())
}
