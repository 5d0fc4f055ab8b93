//! Which outbound connections a sandbox's guests may make: an [`EgressPolicy`], plain data saved with the
//! sandbox. By default a guest reaches the internet but none of the host's own networks — loopback (the
//! Stasis server itself, other local services), link-local (cloud metadata endpoints), private ranges
//! (RFC 1918, CGNAT, IPv6 ULA), unspecified, multicast, broadcast and reserved addresses — since those
//! are where a sandbox escapes to what it should not see. Allow and deny lists of CIDR ranges adjust it.
//!
//! The order of the checks: an address in [`EgressPolicy::allow`] is allowed (so a test can allow
//! `127.0.0.1/32`, and "deny everything but X" is `deny: 0.0.0.0/0` plus `allow: X`); otherwise one in
//! [`EgressPolicy::deny`] is denied; otherwise a special address is denied; otherwise the address is
//! allowed when [`EgressPolicy::allow_internet`] is. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are
//! judged as the IPv4 address they carry, so the mapping cannot sneak past a rule.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A range of addresses in CIDR notation (`10.0.0.0/8`, `::1/128`); a bare address is a range of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// Why a CIDR range did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpNetError {
    /// The address part is not an IPv4 or IPv6 address.
    #[error("{0:?} is not an IP address")]
    Address(String),
    /// The prefix length is not a number within the address's bits.
    #[error("{0:?} is not a prefix length for this address (0 to 32 for IPv4, 0 to 128 for IPv6)")]
    Prefix(String),
}

impl IpNet {
    /// The range of the addresses whose first `prefix` bits are those of `addr`; `None` when `prefix` is
    /// longer than the address. An IPv4-mapped IPv6 range is kept as the IPv4 range it maps.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let (addr, prefix) = match canonical(addr) {
            IpAddr::V4(v4) if matches!(addr, IpAddr::V6(_)) => {
                (IpAddr::V4(v4), prefix.checked_sub(96)?)
            }
            other => (other, prefix),
        };
        let bits = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        (prefix <= bits).then_some(Self { addr, prefix })
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(u32::from(net)) << 96,
                u128::from(u32::from(ip)) << 96,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, prefix: u8) -> bool {
    match prefix {
        0 => true,
        p if p >= 128 => a == b,
        p => (a ^ b) >> (128 - u32::from(p)) == 0,
    }
}

/// `ip`, with an IPv4-mapped IPv6 address turned into the IPv4 address it carries.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let ip: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| IpNetError::Address(addr.to_owned()))?;
        let full = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .map_err(|_| IpNetError::Prefix(p.to_owned()))?,
            None => full,
        };
        Self::new(ip, prefix).ok_or_else(|| IpNetError::Prefix(prefix.to_string()))
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for IpNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The outbound connections a sandbox may make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressPolicy {
    /// Whether addresses that no list names and that are not special may be reached (E2B's
    /// `allowInternetAccess`). `true` by default.
    pub allow_internet: bool,
    /// Ranges that may always be reached, special ones included; wins over [`EgressPolicy::deny`].
    pub allow: Vec<IpNet>,
    /// Ranges that may not be reached.
    pub deny: Vec<IpNet>,
}

impl Default for EgressPolicy {
    fn default() -> Self {
        Self {
            allow_internet: true,
            allow: Vec::new(),
            deny: Vec::new(),
        }
    }
}

/// Why an outbound connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EgressDenied {
    /// The address is in the policy's deny list.
    #[error("{0} is in the sandbox's deny list")]
    DenyList(IpAddr),
    /// The address is of a kind denied unless allowed by name.
    #[error(
        "{addr} is a {kind} address, which sandboxes may not reach unless the policy allows it"
    )]
    Special {
        /// The address.
        addr: IpAddr,
        /// What kind of address it is.
        kind: SpecialKind,
    },
    /// The policy allows no internet access and no allow-list entry names the address.
    #[error("{0} is not in the allow list of a sandbox without internet access")]
    NoInternet(IpAddr),
}

/// The kinds of addresses denied by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialKind {
    /// `127.0.0.0/8`, `::1`: the host itself.
    Loopback,
    /// `169.254.0.0/16`, `fe80::/10`.
    LinkLocal,
    /// `10/8`, `172.16/12`, `192.168/16`, `100.64/10` (CGNAT), `fc00::/7` (ULA).
    Private,
    /// `0.0.0.0/8`, `::`.
    Unspecified,
    /// `224.0.0.0/4`, `ff00::/8`, and the broadcast address.
    Multicast,
    /// `240.0.0.0/4` and other ranges no host should be reached at (IETF protocol assignments,
    /// benchmarking, documentation, site-local IPv6).
    Reserved,
}

impl fmt::Display for SpecialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Loopback => "loopback",
            Self::LinkLocal => "link-local",
            Self::Private => "private",
            Self::Unspecified => "unspecified",
            Self::Multicast => "multicast or broadcast",
            Self::Reserved => "reserved",
        })
    }
}

/// The kind of `ip` if it is special.
pub fn special_kind(ip: IpAddr) -> Option<SpecialKind> {
    match canonical(ip) {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<SpecialKind> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some(SpecialKind::Loopback)
    } else if ip.is_link_local() {
        Some(SpecialKind::LinkLocal)
    } else if ip.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
        Some(SpecialKind::Private)
    } else if o[0] == 0 {
        Some(SpecialKind::Unspecified)
    } else if ip.is_multicast() || ip.is_broadcast() {
        Some(SpecialKind::Multicast)
    } else if o[0] >= 240
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || ip.is_documentation()
    {
        Some(SpecialKind::Reserved)
    } else {
        None
    }
}

fn special_v6(ip: Ipv6Addr) -> Option<SpecialKind> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some(SpecialKind::Loopback)
    } else if ip.is_unspecified() {
        Some(SpecialKind::Unspecified)
    } else if (first & 0xffc0) == 0xfe80 {
        Some(SpecialKind::LinkLocal)
    } else if (first & 0xfe00) == 0xfc00 {
        Some(SpecialKind::Private)
    } else if ip.is_multicast() {
        Some(SpecialKind::Multicast)
    } else if (first & 0xffc0) == 0xfec0 || first == 0x2001 && ip.segments()[1] == 0x0db8 {
        Some(SpecialKind::Reserved)
    } else if let Some(v4) = ip.to_ipv4() {
        // IPv4-compatible (`::a.b.c.d`) and NAT64 addresses are judged by the IPv4 address they embed.
        if ip.segments()[..6].iter().all(|&s| s == 0) {
            special_v4(v4)
        } else {
            None
        }
    } else if first == 0x0064 && ip.segments()[1] == 0xff9b {
        let s = ip.segments();
        special_v4(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ))
    } else {
        None
    }
}

impl EgressPolicy {
    /// A policy allowing every address, special ones included (for trusted setups and tests).
    pub fn allow_all() -> Self {
        Self {
            allow_internet: true,
            allow: vec![
                IpNet {
                    addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    prefix: 0,
                },
                IpNet {
                    addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                    prefix: 0,
                },
            ],
            deny: Vec::new(),
        }
    }

    /// The policy a stored [`crate::lifecycle::network::NetworkPolicy`] (E2B's `allowOut`, `denyOut`,
    /// `allowInternetAccess`) asks for, as far as addresses go: its CIDR blocks and addresses; domain
    /// names in `allowOut` are left out, since a connect names an address, not a host name.
    pub fn from_network_policy(policy: &crate::lifecycle::network::NetworkPolicy) -> Self {
        let nets = |list: &Option<Vec<String>>| -> Vec<IpNet> {
            list.iter()
                .flatten()
                .filter_map(|entry| entry.parse().ok())
                .collect()
        };
        Self {
            allow_internet: policy.allow_internet_access.unwrap_or(true),
            allow: nets(&policy.allow_out),
            deny: nets(&policy.deny_out),
        }
    }

    /// Whether a guest may connect to `ip`, and if not, why.
    pub fn check(&self, ip: IpAddr) -> Result<(), EgressDenied> {
        let ip = canonical(ip);
        if self.allow.iter().any(|net| net.contains(ip)) {
            return Ok(());
        }
        if self.deny.iter().any(|net| net.contains(ip)) {
            return Err(EgressDenied::DenyList(ip));
        }
        if let Some(kind) = special_kind(ip) {
            return Err(EgressDenied::Special { addr: ip, kind });
        }
        if !self.allow_internet {
            return Err(EgressDenied::NoInternet(ip));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("a test address")
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("a test range")
    }

    #[test]
    fn the_default_denies_the_hosts_own_networks() {
        let policy = EgressPolicy::default();
        for (addr, kind) in [
            ("127.0.0.1", SpecialKind::Loopback),
            ("127.8.9.10", SpecialKind::Loopback),
            ("::1", SpecialKind::Loopback),
            ("::ffff:127.0.0.1", SpecialKind::Loopback),
            ("169.254.169.254", SpecialKind::LinkLocal),
            ("fe80::1", SpecialKind::LinkLocal),
            ("10.1.2.3", SpecialKind::Private),
            ("172.16.0.1", SpecialKind::Private),
            ("172.31.255.255", SpecialKind::Private),
            ("192.168.1.1", SpecialKind::Private),
            ("100.64.0.1", SpecialKind::Private),
            ("fd00::1", SpecialKind::Private),
            ("0.0.0.0", SpecialKind::Unspecified),
            ("::", SpecialKind::Unspecified),
            ("224.0.0.1", SpecialKind::Multicast),
            ("255.255.255.255", SpecialKind::Multicast),
            ("ff02::1", SpecialKind::Multicast),
            ("240.0.0.1", SpecialKind::Reserved),
            ("::127.0.0.1", SpecialKind::Loopback),
            ("64:ff9b::a00:1", SpecialKind::Private),
        ] {
            let addr = ip(addr);
            match policy.check(addr) {
                Err(EgressDenied::Special { kind: k, .. }) => assert_eq!(k, kind, "{addr}"),
                other => panic!("{addr}: {other:?}"),
            }
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
        ] {
            assert_eq!(policy.check(ip(public)), Ok(()), "{public}");
        }
    }

    #[test]
    fn the_allow_list_wins_over_the_deny_list_and_the_special_ranges() {
        let policy = EgressPolicy {
            allow_internet: true,
            allow: vec![net("127.0.0.1"), net("10.0.0.0/8")],
            deny: vec![net("0.0.0.0/0")],
        };
        assert_eq!(policy.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(policy.check(ip("::ffff:127.0.0.1")), Ok(()), "mapped");
        assert_eq!(policy.check(ip("10.9.9.9")), Ok(()));
        assert_eq!(
            policy.check(ip("127.0.0.2")),
            Err(EgressDenied::DenyList(ip("127.0.0.2")))
        );
        assert_eq!(
            policy.check(ip("1.1.1.1")),
            Err(EgressDenied::DenyList(ip("1.1.1.1")))
        );
        // The deny list holds only IPv4: IPv6 public addresses are still allowed.
        assert_eq!(policy.check(ip("2606:4700::1111")), Ok(()));
    }

    #[test]
    fn without_internet_only_the_allow_list_is_reachable() {
        let policy = EgressPolicy {
            allow_internet: false,
            allow: vec![net("1.1.1.0/24")],
            deny: Vec::new(),
        };
        assert_eq!(policy.check(ip("1.1.1.1")), Ok(()));
        assert_eq!(
            policy.check(ip("8.8.8.8")),
            Err(EgressDenied::NoInternet(ip("8.8.8.8")))
        );
        assert!(matches!(
            policy.check(ip("127.0.0.1")),
            Err(EgressDenied::Special { .. })
        ));
    }

    #[test]
    fn allow_all_reaches_everything() {
        let policy = EgressPolicy::allow_all();
        for addr in ["127.0.0.1", "::1", "10.0.0.1", "1.1.1.1", "fe80::1"] {
            assert_eq!(policy.check(ip(addr)), Ok(()), "{addr}");
        }
    }

    #[test]
    fn a_stored_network_policy_gives_its_addresses() {
        let stored = crate::lifecycle::network::NetworkPolicy {
            allow_out: Some(vec![
                "1.2.3.4".into(),
                "example.com".into(),
                "10.0.0.0/8".into(),
            ]),
            deny_out: Some(vec!["0.0.0.0/0".into()]),
            allow_internet_access: Some(false),
            ..Default::default()
        };
        let policy = EgressPolicy::from_network_policy(&stored);
        assert_eq!(policy.allow, vec![net("1.2.3.4"), net("10.0.0.0/8")]);
        assert_eq!(policy.deny, vec![net("0.0.0.0/0")]);
        assert!(!policy.allow_internet);
        assert_eq!(policy.check(ip("10.1.1.1")), Ok(()));
        assert_eq!(
            EgressPolicy::from_network_policy(&Default::default()),
            EgressPolicy::default()
        );
    }

    #[test]
    fn ranges_parse_print_and_refuse_nonsense() {
        assert_eq!(net("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(net("::1").to_string(), "::1/128");
        assert_eq!(net("::ffff:10.0.0.0/104").to_string(), "10.0.0.0/8");
        assert!(net("10.0.0.0/8").contains(ip("10.255.0.1")));
        assert!(!net("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(!net("10.0.0.0/8").contains(ip("fd00::1")));
        assert!(net("0.0.0.0/0").contains(ip("1.2.3.4")));
        assert!(net("fc00::/7").contains(ip("fdff::1")));
        assert_eq!(
            "10.0.0.0/33".parse::<IpNet>(),
            Err(IpNetError::Prefix("33".into()))
        );
        assert_eq!(
            "10.0.0.0/x".parse::<IpNet>(),
            Err(IpNetError::Prefix("x".into()))
        );
        assert_eq!(
            "example.com".parse::<IpNet>(),
            Err(IpNetError::Address("example.com".into()))
        );
        assert!("::ffff:1.2.3.4/90".parse::<IpNet>().is_err());
    }

    #[test]
    fn a_policy_round_trips_through_serde() -> Result<(), Box<dyn std::error::Error>> {
        let policy = EgressPolicy {
            allow_internet: false,
            allow: vec![net("127.0.0.1"), net("2001:db8::/32")],
            deny: vec![net("8.8.8.8")],
        };
        let json = serde_json::to_string(&policy)?;
        assert!(json.contains("\"127.0.0.1/32\""), "{json}");
        assert_eq!(serde_json::from_str::<EgressPolicy>(&json)?, policy);
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&policy, config)?;
        let (back, _) = bincode::serde::decode_from_slice::<EgressPolicy, _>(&bytes, config)?;
        assert_eq!(back, policy);
        assert!(serde_json::from_str::<IpNet>("\"10.0.0.0/99\"").is_err());
        Ok(())
    }
}
