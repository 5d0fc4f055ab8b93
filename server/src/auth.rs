//! Who may call what. The control plane wants the server's API key (`X-API-KEY`, or `Authorization:
//! Bearer` as the JS SDK sends its access token); the envd plane wants, for the sandbox named by the
//! `E2b-Sandbox-Id`/`Novita-Sandbox-Id` header, that sandbox's own access token in `X-Access-Token`, so
//! one sandbox's token opens no other sandbox.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::connect::{Code, ConnectError};
use crate::error::ApiError;
use crate::state::AppState;

/// Headers that name the sandbox of an envd call (Python SDK, JS SDK).
pub const SANDBOX_ID_HEADERS: [&str; 2] = ["e2b-sandbox-id", "novita-sandbox-id"];
/// Header carrying a sandbox's envd access token.
pub const ACCESS_TOKEN_HEADER: &str = "x-access-token";
/// Header carrying the API key.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Middleware: 401 unless the request carries the API key.
pub async fn require_api_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let key = headers
        .get(API_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        });
    match key {
        Some(key) if constant_time_eq(key.as_bytes(), state.api_key().as_bytes()) => {
            next.run(request).await
        }
        Some(_) => ApiError::new(StatusCode::UNAUTHORIZED, "invalid API key").into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing API key (X-API-KEY header)",
        )
        .into_response(),
    }
}

/// The sandbox an envd call is for, once its access token checks out: `invalid_argument` without a
/// sandbox header, `not_found` for an unknown sandbox, `unauthenticated` without a token and
/// `permission_denied` with a wrong one. Runs before anything touches the sandbox.
pub fn envd_sandbox(state: &AppState, headers: &HeaderMap) -> Result<String, ConnectError> {
    let id = SANDBOX_ID_HEADERS
        .iter()
        .find_map(|h| headers.get(*h))
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ConnectError::new(
                Code::InvalidArgument,
                "missing sandbox id (E2b-Sandbox-Id or Novita-Sandbox-Id header)",
            )
        })?;
    state
        .manager()
        .info(id)
        .map_err(|e| ConnectError::from(ApiError::from(e)))?;
    let token = headers
        .get(ACCESS_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ConnectError::new(Code::Unauthenticated, "missing X-Access-Token header"))?;
    if !constant_time_eq(token.as_bytes(), state.access_token(id).as_bytes()) {
        return Err(ConnectError::new(
            Code::PermissionDenied,
            "the access token is not this sandbox's",
        ));
    }
    Ok(id.to_owned())
}

/// Compares secrets in time independent of where they differ, so timing tells nothing about a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn equal_means_same_bytes_and_length() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
