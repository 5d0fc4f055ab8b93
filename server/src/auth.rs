//! Who may call what. The control plane wants one of the server's API keys (`X-API-KEY`, or
//! `Authorization: Bearer` as the JS SDK sends its access token); the envd plane wants, for the sandbox
//! named by the `E2b-Sandbox-Id`/`Novita-Sandbox-Id` header, that sandbox's own access token in
//! `X-Access-Token`, so one sandbox's token opens no other sandbox.
//!
//! Keys are tenants: every sandbox and snapshot records the [`Caller::owner`] identifier of the key that
//! made it (a digest, never the key), and a key sees only its own — another key's sandbox is answered
//! exactly like an unknown id, so a key cannot even learn that it exists.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use stasis::lifecycle::{LifecycleError, SandboxInfo, SnapshotInfo};

use crate::connect::{Code, ConnectError};
use crate::error::ApiError;
use crate::state::AppState;

/// Headers that name the sandbox of an envd call (Python SDK, JS SDK).
pub const SANDBOX_ID_HEADERS: [&str; 2] = ["e2b-sandbox-id", "novita-sandbox-id"];
/// Header carrying a sandbox's envd access token.
pub const ACCESS_TOKEN_HEADER: &str = "x-access-token";
/// Header carrying the API key.
pub const API_KEY_HEADER: &str = "x-api-key";

/// The key a control-plane request was authenticated with, as the handlers see it: put in the request's
/// extensions by [`require_api_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    owner: String,
}

impl Caller {
    /// The caller whose key is `key`.
    pub fn for_key(key: &str) -> Self {
        Self {
            owner: owner_id(key),
        }
    }

    /// The identifier recorded as the owner of what this caller creates.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Whether this caller owns something recorded with `owner`.
    fn owns(&self, owner: Option<&str>) -> bool {
        owner == Some(self.owner.as_str())
    }
}

/// The owner identifier of API key `key`: the first 128 bits of sha256 over a domain tag and the key, in
/// hex. Stable across restarts (it is stored in records), and it does not reveal the key.
pub fn owner_id(key: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"stasis api key owner\0");
    hasher.update(key.as_bytes());
    hex::encode(&hasher.finalize()[..16])
}

/// Sandbox `id` if `caller` owns it; anyone else's is [`LifecycleError::NotFound`], word for word what an
/// unknown id gets.
pub fn owned_sandbox(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<SandboxInfo, LifecycleError> {
    let info = state.manager().info(id)?;
    if caller.owns(info.owner.as_deref()) {
        Ok(info)
    } else {
        Err(LifecycleError::NotFound(id.to_owned()))
    }
}

/// Snapshot `id` if `caller` owns it; anyone else's is [`LifecycleError::SnapshotNotFound`], as an
/// unknown one.
pub fn owned_snapshot(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<SnapshotInfo, LifecycleError> {
    let info = state.manager().snapshot_by_id(id)?;
    if caller.owns(info.owner.as_deref()) {
        Ok(info)
    } else {
        Err(LifecycleError::SnapshotNotFound(id.to_owned()))
    }
}

/// Middleware: 401 unless the request carries one of the API keys; the handlers then find its
/// [`Caller`] among the request's extensions.
pub async fn require_api_key(
    State(state): State<AppState>,
    mut request: Request,
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
    match key.map(|key| state.authenticate(key)) {
        Some(Some(caller)) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Some(None) => ApiError::new(StatusCode::UNAUTHORIZED, "invalid API key").into_response(),
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

/// Headers that carry a sandbox's traffic token: the code-interpreter SDKs send it (and not the envd
/// access token) on their context calls. Stasis hands out the access token as the traffic token too.
pub const TRAFFIC_TOKEN_HEADERS: [&str; 2] =
    ["e2b-traffic-access-token", "novita-traffic-access-token"];

/// The sandbox a code-interpreter call (`/execute`, `/contexts`) is for: named by the sandbox-id header,
/// authorized by its access token in `X-Access-Token` or in a traffic-token header. 400 without a sandbox
/// header, 404 for an unknown sandbox, 401 without a token, 403 with a wrong one.
pub fn jupyter_sandbox(state: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    let id = SANDBOX_ID_HEADERS
        .iter()
        .find_map(|h| headers.get(*h))
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::bad_request("missing sandbox id (E2b-Sandbox-Id or Novita-Sandbox-Id header)")
        })?;
    state.manager().info(id).map_err(ApiError::from)?;
    let token = std::iter::once(ACCESS_TOKEN_HEADER)
        .chain(TRAFFIC_TOKEN_HEADERS)
        .find_map(|h| headers.get(h))
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing X-Access-Token (or E2B-Traffic-Access-Token) header",
            )
        })?;
    if !constant_time_eq(token.as_bytes(), state.access_token(id).as_bytes()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the access token is not this sandbox's",
        ));
    }
    Ok(id.to_owned())
}

/// Compares secrets in time independent of where they differ, so timing tells nothing about a prefix.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::{constant_time_eq, owner_id};

    #[test]
    fn equal_means_same_bytes_and_length() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn owner_ids_are_stable_distinct_and_hide_the_key() {
        let key = "0123456789abcdef0123456789abcdef";
        assert_eq!(owner_id(key), owner_id(key));
        assert_ne!(owner_id(key), owner_id("another key"));
        assert_eq!(owner_id(key).len(), 32);
        assert!(!owner_id(key).contains(key) && !key.contains(&owner_id(key)));
    }
}
