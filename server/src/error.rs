//! Control-plane errors: every failure is `{"code": <status>, "message": "..."}` with
//! `Content-Type: application/json`, which is what the SDKs read (the JS SDK decides 404/409 from `code`).
//! Internal failures are logged with their whole cause chain and answered with a generic message, so
//! paths and other internals never reach a client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use stasis::lifecycle::{LifecycleError, VolumeError};

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What the client is told.
    pub message: String,
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404: no such thing.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 500, after logging `error` and its causes; the client learns only that it was internal.
    pub fn internal(error: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %chain(error), "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
    }
}

/// `error: cause: cause…`, for logs.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The body of every control-plane error, as the SDKs parse it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorJson {
    /// The HTTP status, repeated.
    pub code: u16,
    /// What went wrong.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorJson {
            code: self.status.as_u16(),
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<LifecycleError> for ApiError {
    fn from(error: LifecycleError) -> Self {
        use LifecycleError as E;
        let status = match &error {
            E::NotFound(_) | E::SnapshotNotFound(_) | E::UnknownModule { .. } => {
                StatusCode::NOT_FOUND
            }
            E::UnknownTemplate(_)
            | E::ForkCount(_)
            | E::Query(_)
            | E::InvalidBlob(_)
            | E::Network(_) => StatusCode::BAD_REQUEST,
            E::Busy(_) | E::Paused(_) | E::Lost(_) | E::Running(_) | E::Conflict(_) => {
                StatusCode::CONFLICT
            }
            E::Limit { .. } => StatusCode::TOO_MANY_REQUESTS,
            E::Volume(volume) => match volume_status(volume) {
                Some(status) => status,
                None => return Self::internal(&error),
            },
            // What E2B answers when a sandbox's disk is full (its SDKs raise NotEnoughSpace on it);
            // not 429, which SDK clients retry and report as a rate limit.
            E::InsufficientDisk { .. } => StatusCode::INSUFFICIENT_STORAGE,
            E::Template(_)
            | E::Create(_)
            | E::Pause(_)
            | E::Resume(_)
            | E::Store(_)
            | E::ColdStart(_) => {
                return Self::internal(&error);
            }
        };
        Self::new(status, error.to_string())
    }
}

/// The status of a volume failure; `None` for an internal one.
fn volume_status(error: &VolumeError) -> Option<StatusCode> {
    use VolumeError as V;
    Some(match error {
        V::NotFound(_) => StatusCode::NOT_FOUND,
        V::NameTaken(_) | V::InUse { .. } => StatusCode::CONFLICT,
        V::InvalidName(_) | V::Quota(_) | V::InvalidPath { .. } => StatusCode::BAD_REQUEST,
        V::Io(_) => return None,
    })
}

impl From<VolumeError> for ApiError {
    fn from(error: VolumeError) -> Self {
        match volume_status(&error) {
            Some(status) => Self::new(status, error.to_string()),
            None => Self::internal(&error),
        }
    }
}

/// A blocking task that panicked or was cancelled: internal.
impl From<tokio::task::JoinError> for ApiError {
    fn from(error: tokio::task::JoinError) -> Self {
        Self::internal(&error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_causes() {
        let io = std::io::Error::other("/secret/path/blob unreadable");
        let error = ApiError::from(LifecycleError::Store(io));
        assert_eq!(error.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!error.message.contains("secret"));
    }

    #[test]
    fn lifecycle_errors_map_to_statuses() {
        let cases = [
            (LifecycleError::NotFound("x".into()), 404),
            (LifecycleError::Paused("x".into()), 409),
            (LifecycleError::Busy("x".into()), 409),
            (LifecycleError::UnknownTemplate("x".into()), 400),
            (
                LifecycleError::Limit {
                    what: "running sandboxes",
                    limit: 1,
                },
                429,
            ),
            (
                LifecycleError::InsufficientDisk {
                    available: 1,
                    floor: 2,
                },
                507,
            ),
        ];
        for (error, status) in cases {
            assert_eq!(ApiError::from(error).status.as_u16(), status);
        }
    }
}
