//! The Connect protocol's JSON codec, as much of it as envd's clients use: unary calls (plain JSON in and
//! out, errors as a non-200 status with `{"code": "not_found", "message": …}`) and server-streaming calls
//! (`application/connect+json`: envelopes of one flag byte, a 4-byte big-endian length and JSON; the last
//! one flagged [`END_STREAM`] carrying `{}` or `{"error": …}`, always under HTTP 200).

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Content type of streaming requests and responses; the SDKs compare it exactly.
pub const STREAM_CONTENT_TYPE: &str = "application/connect+json";
/// Envelope flag: the payload is compressed (not supported: clients only compress when told they may).
pub const COMPRESSED: u8 = 0x01;
/// Envelope flag: the end-of-stream message.
pub const END_STREAM: u8 = 0x02;

/// A Connect error code (the protocol's strings and their HTTP statuses for unary calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// `invalid_argument`, 400.
    InvalidArgument,
    /// `unauthenticated`, 401.
    Unauthenticated,
    /// `permission_denied`, 403.
    PermissionDenied,
    /// `not_found`, 404.
    NotFound,
    /// `already_exists`, 409.
    AlreadyExists,
    /// `failed_precondition`, 400 (e.g. the sandbox is paused).
    FailedPrecondition,
    /// `resource_exhausted`, 429.
    ResourceExhausted,
    /// `unimplemented`, 501.
    Unimplemented,
    /// `unavailable`, 503 (busy; retry).
    Unavailable,
    /// `internal`, 500.
    Internal,
}

impl Code {
    /// The code as the protocol spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
            Self::NotFound => "not_found",
            Self::AlreadyExists => "already_exists",
            Self::FailedPrecondition => "failed_precondition",
            Self::ResourceExhausted => "resource_exhausted",
            Self::Unimplemented => "unimplemented",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status of a unary error with this code (Connect's mapping).
    pub fn status(self) -> StatusCode {
        match self {
            Self::InvalidArgument | Self::FailedPrecondition => StatusCode::BAD_REQUEST,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::PermissionDenied => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::AlreadyExists => StatusCode::CONFLICT,
            Self::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Self::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A Connect error. As a response it is the unary form; [`end_stream`] gives the streaming form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError {
    /// The code.
    pub code: Code,
    /// What the client is told.
    pub message: String,
}

impl ConnectError {
    /// An error with this code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The error as JSON: `{"code": "...", "message": "..."}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "code": self.code.as_str(), "message": self.message })
    }
}

impl IntoResponse for ConnectError {
    fn into_response(self) -> Response {
        (
            self.code.status(),
            [(header::CONTENT_TYPE, "application/json")],
            self.to_json().to_string(),
        )
            .into_response()
    }
}

/// The same failure for the REST-style envd routes (`/files`): `{"code": <status>, "message"}`.
impl From<ConnectError> for ApiError {
    fn from(error: ConnectError) -> Self {
        ApiError::new(error.code.status(), error.message)
    }
}

/// A control-plane error met while serving an envd call (the sandbox is unknown, paused, busy…).
impl From<ApiError> for ConnectError {
    fn from(error: ApiError) -> Self {
        let code = match error.status.as_u16() {
            400 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            409 => Code::FailedPrecondition,
            429 => Code::ResourceExhausted,
            501 => Code::Unimplemented,
            503 => Code::Unavailable,
            _ => Code::Internal,
        };
        Self::new(code, error.message)
    }
}

/// One envelope: `flags`, the payload's length (big-endian u32), the payload.
pub fn envelope(flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(flags);
    // Payloads are bounded by the body limit and command output limits, far below 4 GiB.
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The end-of-stream envelope: `{}` after success, `{"error": …}` after a failure.
pub fn end_stream(error: Option<&ConnectError>) -> Vec<u8> {
    let body = match error {
        None => serde_json::json!({}),
        Some(error) => serde_json::json!({ "error": error.to_json() }),
    };
    envelope(END_STREAM, body.to_string().as_bytes())
}

/// A streaming response made of already-encoded envelopes.
pub fn stream_response(body: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, STREAM_CONTENT_TYPE)],
        body,
    )
        .into_response()
}

/// A streaming call that failed before producing anything: an end-stream envelope with the error.
pub fn stream_error(error: &ConnectError) -> Response {
    stream_response(end_stream(Some(error)))
}

/// One envelope of a request body, and what follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// Its flags ([`END_STREAM`], [`COMPRESSED`]).
    pub flags: u8,
    /// Its payload.
    pub payload: &'a [u8],
    /// The bytes of the body after it.
    pub rest: &'a [u8],
}

/// The first envelope of a request body; `None` for an empty body. Compressed envelopes are refused (no
/// compression is negotiated).
pub fn next_envelope(body: &[u8]) -> Result<Option<Envelope<'_>>, ConnectError> {
    let invalid = |what: &str| ConnectError::new(Code::InvalidArgument, what.to_owned());
    let Some((&flags, rest)) = body.split_first() else {
        return Ok(None);
    };
    if flags & COMPRESSED != 0 {
        return Err(ConnectError::new(
            Code::Unimplemented,
            "compressed request envelopes are not supported",
        ));
    }
    let length: [u8; 4] = rest
        .get(..4)
        .and_then(|l| l.try_into().ok())
        .ok_or_else(|| invalid("truncated envelope header"))?;
    let end = 4 + u32::from_be_bytes(length) as usize;
    let payload = rest
        .get(4..end)
        .ok_or_else(|| invalid("truncated envelope"))?;
    Ok(Some(Envelope {
        flags,
        payload,
        rest: &rest[end..],
    }))
}

/// Decodes a request message: the first envelope's payload when the request is a streaming one
/// (`application/connect+json`), the whole body otherwise. An empty body is `{}` (proto3 defaults).
pub fn decode<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, ConnectError> {
    let streaming = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(STREAM_CONTENT_TYPE));
    let json = if streaming {
        next_envelope(body)?
            .ok_or_else(|| ConnectError::new(Code::InvalidArgument, "empty request stream"))?
            .payload
    } else {
        body
    };
    let json = if json.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        json
    };
    serde_json::from_slice(json)
        .map_err(|e| ConnectError::new(Code::InvalidArgument, format!("invalid request: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streaming() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, STREAM_CONTENT_TYPE.parse().unwrap());
        headers
    }

    #[test]
    fn envelopes_round_trip() {
        let wire = envelope(0, br#"{"a":1}"#);
        assert_eq!(&wire[..5], &[0, 0, 0, 0, 7]);
        let value: serde_json::Value = decode(&streaming(), &wire).unwrap();
        assert_eq!(value, serde_json::json!({"a": 1}));
        assert_eq!(end_stream(None), [&[2u8, 0, 0, 0, 2][..], b"{}"].concat());
    }

    #[test]
    fn malformed_envelopes_are_invalid_arguments() {
        for wire in [
            &b""[..],
            &[0, 0, 0],
            &[0, 0, 0, 0, 9, b'{'],
            &[1, 0, 0, 0, 2, b'{', b'}'],
        ] {
            let error = decode::<serde_json::Value>(&streaming(), wire).unwrap_err();
            assert!(
                matches!(error.code, Code::InvalidArgument | Code::Unimplemented),
                "{wire:?}: {error:?}"
            );
        }
    }

    #[test]
    fn unary_bodies_are_plain_json_and_empty_is_default() {
        let value: serde_json::Value = decode(&HeaderMap::new(), b"").unwrap();
        assert_eq!(value, serde_json::json!({}));
    }
}
