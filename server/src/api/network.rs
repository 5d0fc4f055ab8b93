//! A sandbox's network policy on the wire: the `network` create option and `PUT /sandboxes/{id}/network`
//! (E2B's `update_network`, Novita's `setNetwork`), and how `GET /sandboxes/{id}` reports it. The policy
//! is stored with the sandbox and reported back; this server does not enforce it (its sandboxes have no
//! network to filter yet).

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use stasis::lifecycle::{EgressProxy, NetworkPolicy};
use utoipa::ToSchema;

use super::{PathId, blocking, json_body};
use crate::auth::{Caller, owned_sandbox};
use crate::error::{ApiError, ErrorJson};
use crate::state::AppState;

/// A network policy as the SDKs send it and read it back. A password or CA certificate given for the
/// egress proxy is kept and never reported.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkJson {
    /// Allowed egress destinations: CIDR blocks, IP addresses, domain names (`*.example.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_out: Option<Vec<String>>,
    /// Denied egress destinations: CIDR blocks, IP addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_out: Option<Vec<String>>,
    /// DNS servers reachable when `allowOut` names a domain (IPv4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_servers: Option<Vec<String>>,
    /// Per-host transform rules: host → list of `{"transform": {"headers": {…}}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub rules: Option<serde_json::Value>,
    /// A SOCKS5 proxy egress is tunneled through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<EgressProxyJson>,
    /// Whether the sandbox's URLs accept traffic without its traffic token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_public_traffic: Option<bool>,
    /// The host mask of requests to the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_request_host: Option<String>,
    /// Update only: `false` denies all egress.
    #[serde(
        default,
        rename = "allow_internet_access",
        alias = "allowInternetAccess",
        skip_serializing
    )]
    pub allow_internet_access: Option<bool>,
}

/// An egress proxy on the wire.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressProxyJson {
    /// `host:port`.
    pub address: String,
    /// SOCKS5 user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// SOCKS5 password; never reported.
    #[serde(default, skip_serializing)]
    pub password: Option<String>,
    /// TLS to the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ProxyTlsJson>,
}

/// TLS to an egress proxy.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyTlsJson {
    /// Whether TLS is on.
    #[serde(default)]
    pub enabled: bool,
    /// The name the certificate is checked against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// PEM CA certificates; never reported.
    #[serde(default, skip_serializing)]
    pub ca_cert: Option<String>,
}

impl NetworkJson {
    /// The policy to store.
    pub fn into_policy(self) -> NetworkPolicy {
        NetworkPolicy {
            allow_out: self.allow_out,
            deny_out: self.deny_out,
            dns_servers: self.dns_servers,
            rules: self.rules,
            egress_proxy: self.egress_proxy.map(|p| {
                let tls = p.tls.unwrap_or_default();
                EgressProxy {
                    address: p.address,
                    username: p.username,
                    password: p.password,
                    tls: tls.enabled,
                    tls_server_name: tls.server_name,
                    tls_ca_cert: tls.ca_cert,
                }
            }),
            allow_internet_access: self.allow_internet_access,
            allow_public_traffic: self.allow_public_traffic,
            mask_request_host: self.mask_request_host,
        }
    }

    /// The policy as reported: secrets left out.
    pub fn report(policy: &NetworkPolicy) -> Self {
        Self {
            allow_out: policy.allow_out.clone(),
            deny_out: policy.deny_out.clone(),
            dns_servers: policy.dns_servers.clone(),
            rules: policy.rules.clone(),
            egress_proxy: policy.egress_proxy.as_ref().map(|p| EgressProxyJson {
                address: p.address.clone(),
                username: p.username.clone(),
                password: None,
                tls: p.tls.then(|| ProxyTlsJson {
                    enabled: true,
                    server_name: p.tls_server_name.clone(),
                    ca_cert: None,
                }),
            }),
            allow_public_traffic: policy.allow_public_traffic,
            mask_request_host: policy.mask_request_host.clone(),
            allow_internet_access: policy.allow_internet_access,
        }
    }
}

/// `PUT /sandboxes/{id}/network`: replaces the sandbox's egress policy (a field left out is cleared); 204.
#[utoipa::path(put, path = "/sandboxes/{id}/network", tag = "sandboxes", operation_id = "update_network",
    params(("id" = String, Path, description = "The sandbox id")),
    request_body(content = Option<NetworkJson>, description = "The new policy; an empty body clears it"),
    responses((status = 204, description = "Stored (reported by GET /sandboxes/{id}; not enforced)"),
        (status = 400, description = "Malformed id or body, or an invalid entry", body = ErrorJson),
        (status = 404, description = "No such sandbox", body = ErrorJson),
        (status = 409, description = "Busy with another operation", body = ErrorJson), (status = 401, description = "Missing or wrong API key", body = ErrorJson)))]
pub async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathId(id): PathId,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    owned_sandbox(&state, &caller, &id)?;
    let body: NetworkJson = json_body(body)?;
    let policy = body.into_policy();
    let policy = (policy != NetworkPolicy::default()).then_some(policy);
    let manager = state.manager().clone();
    blocking(move || manager.set_network(&id, policy)).await??;
    Ok(StatusCode::NO_CONTENT)
}
