//! Route handlers, one module per concept: the control plane ([`sandboxes`], [`snapshots`],
//! [`network`], [`usage`], [`logs`], [`volumes`], [`blobs`], [`templates`], [`metrics`]), the envd plane
//! ([`envd`]) and the volume file API ([`volume_files`]); plus how request bodies and path ids become
//! typed values with the right error statuses.

pub mod blobs;
pub mod envd;
pub mod jupyter;
pub mod logs;
pub mod metrics;
pub mod network;
pub mod sandboxes;
pub mod snapshots;
pub mod templates;
pub mod usage;
pub mod volume_files;
pub mod volumes;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::error::ApiError;

/// Parses a JSON request body. A body over the limit is 413 and any other unreadable body keeps its
/// status; an empty body (or `null`) counts as `{}`, because the JS SDK pauses with no body at all;
/// malformed JSON is 400 with serde's reason.
pub fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body =
        body.map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))?;
    // An absent body is sent as nothing by some clients and as `null` by others (the document marks
    // optional bodies nullable): both mean no options.
    let trimmed = body.trim_ascii();
    let json = if trimmed.is_empty() || trimmed == b"null" {
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

/// The `{id}` of a control-plane path. Axum's own `Path` answers an id that does not decode (a
/// percent-encoded byte that is not UTF-8) with a `text/plain` body; this keeps such a 400 in the JSON
/// error shape every other control-plane error has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| Self(id))
            .map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))
    }
}

/// Deserializes an optional whole number (seconds, a count). JSON has one number type, and JSON Schema's
/// `integer` includes `300.0`, so an integral float is accepted like the integer it equals; a fraction,
/// a negative number or one past `u64` is refused (a 400 through [`json_body`]).
pub fn whole_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    // Largest f64 below 2^64: every integral f64 up to it converts to u64 exactly.
    const MAX_EXACT: f64 = 18_446_744_073_709_549_568.0;
    match Option::<serde_json::Number>::deserialize(deserializer)? {
        None => Ok(None),
        Some(number) => {
            if let Some(n) = number.as_u64() {
                return Ok(Some(n));
            }
            match number.as_f64() {
                Some(f) if f.fract() == 0.0 && (0.0..=MAX_EXACT).contains(&f) => Ok(Some(f as u64)),
                _ => Err(D::Error::custom(format!(
                    "expected a whole number from 0 to {}, got {number}",
                    u64::MAX
                ))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(default, deserialize_with = "whole_number")]
        timeout: Option<u64>,
    }

    fn parse(json: &str) -> Result<Option<u64>, String> {
        serde_json::from_str::<Body>(json)
            .map(|b| b.timeout)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn whole_numbers_parse_as_integers_or_integral_floats() {
        assert_eq!(parse(r#"{"timeout": 300}"#), Ok(Some(300)));
        assert_eq!(parse(r#"{"timeout": 300.0}"#), Ok(Some(300)));
        assert_eq!(parse(r#"{"timeout": 1e3}"#), Ok(Some(1000)));
        assert_eq!(parse(r#"{"timeout": -0.0}"#), Ok(Some(0)));
        assert_eq!(parse(r#"{"timeout": null}"#), Ok(None));
        assert_eq!(parse(r#"{}"#), Ok(None));
        let max = format!(r#"{{"timeout": {}}}"#, u64::MAX);
        assert_eq!(parse(&max), Ok(Some(u64::MAX)));
    }

    #[test]
    fn fractions_negatives_and_overflows_are_refused() {
        for json in [
            r#"{"timeout": -1}"#,
            r#"{"timeout": 0.5}"#,
            r#"{"timeout": 1e300}"#,
            r#"{"timeout": 18446744073709551616}"#,
            r#"{"timeout": "300"}"#,
        ] {
            assert!(parse(json).is_err(), "{json}");
        }
    }
}
