//! A sandbox's network policy as plain data: what E2B's `network` create option and
//! `PUT /sandboxes/{id}/network` set (egress allow and deny lists, DNS servers, per-host rules, an egress
//! proxy, internet access). The lifecycle stores it with the sandbox and reports it back; enforcing it
//! belongs to the sandbox's virtual network, not to the lifecycle. Every list and string is bounded and
//! checked here ([`NetworkPolicy::validate`]), so what is stored is what an enforcer can read.

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

/// Most entries in one list (`allowOut`, `denyOut`), and most hosts with rules.
pub const MAX_ENTRIES: usize = 1000;
/// Most DNS servers.
pub const MAX_DNS_SERVERS: usize = 10;
/// Longest entry (a domain name is at most 253 characters).
pub const MAX_ENTRY_LEN: usize = 253;
/// Largest rules document, serialized.
pub const MAX_RULES_BYTES: usize = 256 << 10;

/// A sandbox's network policy. A field left out means the platform's default for it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkPolicy {
    /// Destinations egress may reach: CIDR blocks, IP addresses or domain names (`*.example.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_out: Option<Vec<String>>,
    /// Destinations egress may not reach: CIDR blocks or IP addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_out: Option<Vec<String>>,
    /// DNS servers reachable when `allow_out` names a domain (IPv4 addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_servers: Option<Vec<String>>,
    /// Per-host transform rules, as the client gave them (host → list of rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<serde_json::Value>,
    /// A SOCKS5 proxy egress is tunneled through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<EgressProxy>,
    /// `false` denies all egress (like `deny_out: ["0.0.0.0/0"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_internet_access: Option<bool>,
    /// Whether the sandbox's URLs accept traffic without its traffic token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_public_traffic: Option<bool>,
    /// The host mask used for requests to the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_request_host: Option<String>,
}

/// A SOCKS5 egress proxy. Its password and CA certificate are kept for whoever enforces the policy and
/// never reported back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressProxy {
    /// `host:port`.
    pub address: String,
    /// The SOCKS5 user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The SOCKS5 password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Whether the connection to the proxy uses TLS.
    #[serde(default)]
    pub tls: bool,
    /// The name to verify the proxy's certificate against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// PEM CA certificates replacing the system trust store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_cert: Option<String>,
}

/// Why a network policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    /// A list has more entries than allowed.
    #[error("{field} has {count} entries; at most {max} are allowed")]
    TooMany {
        /// The field.
        field: &'static str,
        /// How many it has.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// An entry is not what the field takes.
    #[error("{field} entry {entry:?} is not {expected}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The entry, cut to a readable length.
        entry: String,
        /// What the field takes.
        expected: &'static str,
    },
    /// The rules document is too large or is not an object of lists.
    #[error(
        "rules must be an object mapping hosts to lists of rules, at most {MAX_RULES_BYTES} bytes"
    )]
    Rules,
}

impl NetworkPolicy {
    /// Checks every entry: `allowOut` takes CIDR blocks, IP addresses and domain names, `denyOut` CIDR
    /// blocks and IP addresses, `dnsServers` IPv4 addresses; lists and strings are bounded.
    pub fn validate(&self) -> Result<(), NetworkError> {
        check_list(
            "allowOut",
            self.allow_out.as_deref(),
            MAX_ENTRIES,
            |e| is_cidr_or_ip(e) || is_domain(e),
            "a CIDR block, an IP address or a domain name",
        )?;
        check_list(
            "denyOut",
            self.deny_out.as_deref(),
            MAX_ENTRIES,
            is_cidr_or_ip,
            "a CIDR block or an IP address (domain names cannot be denied)",
        )?;
        check_list(
            "dnsServers",
            self.dns_servers.as_deref(),
            MAX_DNS_SERVERS,
            |e| e.parse::<Ipv4Addr>().is_ok(),
            "an IPv4 address",
        )?;
        if let Some(rules) = &self.rules {
            let fits = serde_json::to_vec(rules).is_ok_and(|b| b.len() <= MAX_RULES_BYTES);
            let shaped = rules.as_object().is_some_and(|hosts| {
                hosts.len() <= MAX_ENTRIES
                    && hosts
                        .iter()
                        .all(|(host, list)| is_domain(host) && list.is_array())
            });
            if !fits || !shaped {
                return Err(NetworkError::Rules);
            }
        }
        if let Some(proxy) = &self.egress_proxy {
            let valid = proxy.address.len() <= MAX_ENTRY_LEN
                && proxy
                    .address
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(invalid("egressProxy.address", &proxy.address, "host:port"));
            }
        }
        if let Some(mask) = &self.mask_request_host
            && mask.len() > MAX_ENTRY_LEN
        {
            return Err(invalid("maskRequestHost", mask, "at most 253 characters"));
        }
        Ok(())
    }
}

fn check_list(
    field: &'static str,
    list: Option<&[String]>,
    max: usize,
    valid: impl Fn(&str) -> bool,
    expected: &'static str,
) -> Result<(), NetworkError> {
    let Some(list) = list else { return Ok(()) };
    if list.len() > max {
        return Err(NetworkError::TooMany {
            field,
            count: list.len(),
            max,
        });
    }
    match list.iter().find(|e| e.len() > MAX_ENTRY_LEN || !valid(e)) {
        Some(bad) => Err(invalid(field, bad, expected)),
        None => Ok(()),
    }
}

fn invalid(field: &'static str, entry: &str, expected: &'static str) -> NetworkError {
    NetworkError::Invalid {
        field,
        entry: entry.chars().take(64).collect(),
        expected,
    }
}

/// `1.2.3.4`, `::1`, `10.0.0.0/8`, `fd00::/8`.
fn is_cidr_or_ip(entry: &str) -> bool {
    match entry.split_once('/') {
        None => entry.parse::<IpAddr>().is_ok(),
        Some((ip, bits)) => match (ip.parse::<IpAddr>(), bits.parse::<u8>()) {
            (Ok(IpAddr::V4(_)), Ok(bits)) => bits <= 32,
            (Ok(IpAddr::V6(_)), Ok(bits)) => bits <= 128,
            _ => false,
        },
    }
}

/// A DNS name, optionally with a leading `*.` wildcard: labels of letters, digits and hyphens.
fn is_domain(entry: &str) -> bool {
    let name = entry.strip_prefix("*.").unwrap_or(entry);
    !name.is_empty()
        && name.len() <= MAX_ENTRY_LEN
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(allow: &[&str], deny: &[&str]) -> NetworkPolicy {
        NetworkPolicy {
            allow_out: Some(allow.iter().map(|s| s.to_string()).collect()),
            deny_out: Some(deny.iter().map(|s| s.to_string()).collect()),
            ..NetworkPolicy::default()
        }
    }

    #[test]
    fn addresses_blocks_and_domains_are_accepted_where_they_belong() {
        assert_eq!(
            with(
                &["1.1.1.1", "8.8.8.0/24", "example.com", "*.example.com"],
                &["0.0.0.0/0", "::/0"]
            )
            .validate(),
            Ok(())
        );
        assert!(with(&[], &["example.com"]).validate().is_err());
        assert!(with(&["1.2.3.4/33"], &[]).validate().is_err());
        assert!(with(&["bad host!"], &[]).validate().is_err());
        let many: Vec<String> = (0..=MAX_ENTRIES)
            .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
            .collect();
        let policy = NetworkPolicy {
            allow_out: Some(many),
            ..NetworkPolicy::default()
        };
        assert!(matches!(
            policy.validate(),
            Err(NetworkError::TooMany { .. })
        ));
    }
}
