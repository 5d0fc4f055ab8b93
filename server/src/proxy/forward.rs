//! Forwarding one request over a fresh connection to the guest: an HTTP/1.1 client connection from hyper
//! over the [`GuestStream`], the guest's answer streamed back as it comes. An upgrade the guest accepts
//! (`101 Switching Protocols`: WebSocket, or any protocol over the raw connection) joins the client's
//! upgraded connection to the guest's, byte for byte, until either side ends.

use axum::body::Body;
use axum::extract::Request;
use axum::http::uri::PathAndQuery;
use axum::http::{HeaderMap, HeaderName, StatusCode, Uri, header};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use stasis::HostStream;

use super::stream::GuestStream;

/// Why a request could not be forwarded to the guest (answered 502).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The path the guest was to be sent is not a valid request target.
    #[error("invalid request target")]
    Target(#[from] axum::http::uri::InvalidUri),
    /// The HTTP exchange with the guest failed: it closed the connection, or did not speak HTTP.
    #[error("the service in the sandbox did not answer over HTTP")]
    Http(#[from] hyper::Error),
}

/// Headers that describe one hop, not the request: a proxy does not pass them on (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 4] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::PROXY_AUTHORIZATION,
];

/// Sends `request` to the guest over `stream` with `path_and_query` as its target, and gives back the
/// guest's response.
pub async fn forward(
    stream: HostStream,
    mut request: Request,
    path_and_query: &str,
) -> Result<Response, ForwardError> {
    let upgrade = wants_upgrade(request.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    *request.uri_mut() = Uri::from(path_and_query.parse::<PathAndQuery>()?);
    if !upgrade {
        strip_hop_by_hop(request.headers_mut());
    }
    let io = TokioIo::new(GuestStream::new(stream));
    let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, Body>(io).await?;
    tokio::spawn(async move {
        // The guest ending the connection mid-answer is seen by the response body; nothing to add here.
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "connection to the sandbox service ended");
        }
    });
    let mut response = sender.send_request(request).await?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let guest_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, guest_upgrade) {
                Ok((client, guest)) => {
                    let (mut client, mut guest) = (TokioIo::new(client), TokioIo::new(guest));
                    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut guest).await
                    {
                        tracing::debug!(%error, "upgraded connection to the sandbox ended");
                    }
                }
                Err(error) => tracing::debug!(%error, "upgrade to the sandbox service failed"),
            }
        });
    } else {
        strip_hop_by_hop(response.headers_mut());
    }
    Ok(response.map(Body::new))
}

/// Whether the client asks to switch protocols (`Connection: upgrade` with an `Upgrade` header).
fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes the hop-by-hop headers, and those `Connection` names as such.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(&HOP_BY_HOP) {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove(header::UPGRADE);
}
