//! Which sandbox port a request is for. Three forms reach a port P of sandbox ID:
//!
//! - the Host header `P-ID.DOMAIN`, exactly as the SDKs' `get_host(P)` forms it;
//! - the path `/sandboxes/ID/ports/P/REST`, for clients that cannot set Host (forwarded as `/REST`);
//! - the envd headers `E2b-Sandbox-Id`/`Novita-Sandbox-Id` with `E2b-Sandbox-Port`/`Novita-Sandbox-Port`
//!   P, which is how the SDKs address a sandbox when they are given one URL for all of its ports.
//!
//! Ports [`ENVD_PORT`] and [`JUPYTER_PORT`] are this server's own envd and code-interpreter planes, not a
//! guest's: such a request is served here, with the sandbox id taken from its Host when it has no header.

use axum::http::{HeaderMap, Uri, header};

/// The port E2B's envd listens on in a sandbox; served by this server's envd plane.
pub const ENVD_PORT: u16 = 49983;
/// The port of E2B's code interpreter; served by this server's `/execute` and `/contexts`.
pub const JUPYTER_PORT: u16 = 49999;
/// Headers that name the sandbox port of a request (Python SDK, JS SDK).
pub const PORT_HEADERS: [&str; 2] = ["e2b-sandbox-port", "novita-sandbox-port"];
/// Longest sandbox id accepted in a Host or path before it is looked up: ids are 25 characters.
const MAX_ID_LEN: usize = 64;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// Not a sandbox's port: this server's own API.
    Server,
    /// Port `port` of sandbox `sandbox`, served by this server's own envd or code-interpreter plane.
    Plane {
        /// The sandbox's id.
        sandbox: String,
        /// [`ENVD_PORT`] or [`JUPYTER_PORT`].
        port: u16,
    },
    /// A guest's port.
    Guest(Target),
}

/// A guest port a request is forwarded to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The sandbox's id.
    pub sandbox: String,
    /// The port the guest listens on.
    pub port: u16,
    /// The path and query the guest is sent (the path form's prefix removed).
    pub path_and_query: String,
}

/// Why a request's sandbox address is malformed (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The Host header is not UTF-8.
    #[error("the Host header is not text")]
    HostNotText,
    /// A host under the sandbox domain that is not `<port>-<sandboxID>.<domain>`.
    #[error("host {0:?} is not <port>-<sandboxID>.{1}")]
    Host(String, String),
    /// A port that is not a number from 1 to 65535.
    #[error("{0:?} is not a port (1 to 65535)")]
    Port(String),
    /// A sandbox id with characters no id has, or too long.
    #[error("{0:?} is not a sandbox id")]
    Id(String),
}

/// The address of a request with `uri` and `headers`, for a server whose sandbox domain is `domain`.
pub fn address(
    uri: &Uri,
    headers: &HeaderMap,
    domain: Option<&str>,
) -> Result<Address, AddressError> {
    if let Some(address) = by_host(uri, headers, domain)? {
        return Ok(address);
    }
    if let Some(target) = by_path(uri)? {
        return Ok(Address::Guest(target));
    }
    by_headers(uri, headers)
}

/// The Host form. A host under `domain` must be `<port>-<id>.<domain>` (the API's own `api.<domain>`
/// and the bare domain excepted); any other host is a sandbox host only when its first label has that
/// shape, so a server reached by an unexpected name still routes what the SDKs form.
fn by_host(
    uri: &Uri,
    headers: &HeaderMap,
    domain: Option<&str>,
) -> Result<Option<Address>, AddressError> {
    let host = match headers.get(header::HOST) {
        Some(value) => value.to_str().map_err(|_| AddressError::HostNotText)?,
        None => match uri.authority() {
            Some(authority) => authority.as_str(),
            None => return Ok(None),
        },
    };
    let host = host.trim_end_matches('.');
    let Some((label, rest)) = host.split_once('.') else {
        return Ok(None);
    };
    let under_domain = domain.is_some_and(|d| rest.eq_ignore_ascii_case(d));
    let parsed = label
        .split_once('-')
        .filter(|(port, _)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    let Some((port, id)) = parsed else {
        if under_domain && !label.eq_ignore_ascii_case("api") {
            return Err(AddressError::Host(host.to_owned(), rest.to_owned()));
        }
        return Ok(None);
    };
    let port = parse_port(port)?;
    let sandbox = parse_id(id)?;
    Ok(Some(classify(sandbox, port, uri)))
}

/// The path form `/sandboxes/<id>/ports/<port>[/rest]`.
fn by_path(uri: &Uri) -> Result<Option<Target>, AddressError> {
    let Some(rest) = uri.path().strip_prefix("/sandboxes/") else {
        return Ok(None);
    };
    let mut parts = rest.splitn(4, '/');
    let (Some(id), Some("ports"), Some(port)) = (parts.next(), parts.next(), parts.next()) else {
        return Ok(None);
    };
    let sandbox = parse_id(id)?;
    let port = parse_port(port)?;
    let mut path_and_query = format!("/{}", parts.next().unwrap_or(""));
    if let Some(query) = uri.query() {
        path_and_query.push('?');
        path_and_query.push_str(query);
    }
    Ok(Some(Target {
        sandbox,
        port,
        path_and_query,
    }))
}

/// The header form: only a port header naming a port other than envd's or Jupyter's leads to a guest
/// (those two, and no port header, are this server's envd plane as before).
fn by_headers(uri: &Uri, headers: &HeaderMap) -> Result<Address, AddressError> {
    let Some(port) = PORT_HEADERS.iter().find_map(|h| headers.get(*h)) else {
        return Ok(Address::Server);
    };
    let Some(id) = crate::auth::SANDBOX_ID_HEADERS
        .iter()
        .find_map(|h| headers.get(*h))
    else {
        return Ok(Address::Server);
    };
    let port = parse_port(port.to_str().unwrap_or("?"))?;
    if port == ENVD_PORT || port == JUPYTER_PORT {
        return Ok(Address::Server);
    }
    let sandbox = parse_id(id.to_str().unwrap_or("?"))?;
    Ok(classify(sandbox, port, uri))
}

fn classify(sandbox: String, port: u16, uri: &Uri) -> Address {
    if port == ENVD_PORT || port == JUPYTER_PORT {
        return Address::Plane { sandbox, port };
    }
    let path_and_query = uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    Address::Guest(Target {
        sandbox,
        port,
        path_and_query,
    })
}

fn parse_port(text: &str) -> Result<u16, AddressError> {
    match text.parse::<u16>() {
        Ok(port) if port != 0 && text.len() <= 5 => Ok(port),
        _ => Err(AddressError::Port(text.chars().take(16).collect())),
    }
}

fn parse_id(text: &str) -> Result<String, AddressError> {
    let valid = !text.is_empty()
        && text.len() <= MAX_ID_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        // Ids are lowercase; a Host may arrive in any case (DNS names are case-insensitive).
        Ok(text.to_ascii_lowercase())
    } else {
        Err(AddressError::Id(text.chars().take(MAX_ID_LEN).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(uri: &str, host: Option<&str>) -> Result<Address, AddressError> {
        let uri: Uri = uri.parse().expect("uri");
        let mut headers = HeaderMap::new();
        if let Some(host) = host {
            headers.insert(header::HOST, host.parse().expect("host"));
        }
        address(&uri, &headers, Some("localhost:3000"))
    }

    fn guest(sandbox: &str, port: u16, path: &str) -> Address {
        Address::Guest(Target {
            sandbox: sandbox.into(),
            port,
            path_and_query: path.into(),
        })
    }

    #[test]
    fn hosts_as_the_sdks_form_them() {
        assert_eq!(
            at("/a?b=1", Some("8000-abc.localhost:3000")),
            Ok(guest("abc", 8000, "/a?b=1"))
        );
        assert_eq!(
            at("/x", Some("8000-ABC.example.com")),
            Ok(guest("abc", 8000, "/x"))
        );
        assert_eq!(
            at("/files", Some("49983-abc.localhost:3000")),
            Ok(Address::Plane {
                sandbox: "abc".into(),
                port: ENVD_PORT
            })
        );
        for host in [
            "localhost:3000",
            "api.localhost:3000",
            "127.0.0.1:3000",
            "example.com",
        ] {
            assert_eq!(at("/health", Some(host)), Ok(Address::Server), "{host}");
        }
    }

    #[test]
    fn malformed_hosts_are_refused() {
        for host in [
            "www.localhost:3000",
            "0-abc.localhost:3000",
            "70000-abc.localhost:3000",
            "8000-.localhost:3000",
            "8000-a_b%.example.com",
        ] {
            assert!(at("/", Some(host)).is_err(), "{host}");
        }
    }

    #[test]
    fn the_path_form() {
        assert_eq!(
            at("/sandboxes/abc/ports/8000/x/y?q", None),
            Ok(guest("abc", 8000, "/x/y?q"))
        );
        assert_eq!(
            at("/sandboxes/abc/ports/8000", None),
            Ok(guest("abc", 8000, "/"))
        );
        assert_eq!(at("/sandboxes/abc/pause", None), Ok(Address::Server));
        assert_eq!(at("/sandboxes/abc", None), Ok(Address::Server));
        assert!(at("/sandboxes/abc/ports/http/", None).is_err());
    }

    #[test]
    fn the_header_form() {
        let uri: Uri = "/p".parse().expect("uri");
        let mut headers = HeaderMap::new();
        headers.insert("e2b-sandbox-id", "abc".parse().expect("value"));
        assert_eq!(address(&uri, &headers, None), Ok(Address::Server));
        headers.insert("e2b-sandbox-port", "49999".parse().expect("value"));
        assert_eq!(address(&uri, &headers, None), Ok(Address::Server));
        headers.insert("e2b-sandbox-port", "8000".parse().expect("value"));
        assert_eq!(address(&uri, &headers, None), Ok(guest("abc", 8000, "/p")));
        headers.insert("e2b-sandbox-port", "x".parse().expect("value"));
        assert!(address(&uri, &headers, None).is_err());
    }
}
