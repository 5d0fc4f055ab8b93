//! Route handlers, one module per concept: the control plane ([`sandboxes`], [`blobs`], [`metrics`]) and
//! the envd plane ([`envd`]); plus how request bodies become typed values with the right error statuses.

pub mod blobs;
pub mod envd;
pub mod metrics;
pub mod sandboxes;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Parses a JSON request body. A body over the limit is 413 and any other unreadable body keeps its
/// status; an empty body counts as `{}`, because the JS SDK pauses with no body at all; malformed JSON is
/// 400 with serde's reason.
pub fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body =
        body.map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))?;
    let json = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        &body[..]
    };
    serde_json::from_slice(json)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Runs blocking runtime work off the async workers.
pub async fn blocking<R: Send + 'static>(
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R, ApiError> {
    Ok(tokio::task::spawn_blocking(work).await?)
}
