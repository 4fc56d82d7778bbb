use std::net::IpAddr;

use ipnet::IpNet;

use crate::{CoreError, ErrorCode};

/// Every virtual key starts with this prefix.
pub const KEY_PREFIX: &str = "sk-rt-";

/// HMAC-SHA256 of a virtual key under the server pepper: the only form in which keys are kept.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// Builds a hash from bytes received over the wire.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CoreError> {
        <[u8; 32]>::try_from(bytes)
            .map(Self)
            .map_err(|_| CoreError::InvalidKeyHash(bytes.len()))
    }
}

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyHash({:02x}{:02x}..)", self.0[0], self.0[1])
    }
}

/// What a virtual key may do; checked on every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPolicy {
    /// Public identifier of the key (never the secret).
    pub key_id: String,
    /// Tenant that owns the key.
    pub tenant_id: String,
    /// Team scope, if any.
    pub team_id: Option<String>,
    /// User scope, if any.
    pub user_id: Option<String>,
    /// Model names the key may call; empty means every model of its tenant.
    pub models: Vec<String>,
    /// Client networks allowed to use the key; empty means any address.
    pub allowed_cidrs: Vec<IpNet>,
    /// Unix seconds after which the key is refused.
    pub expires_at: Option<i64>,
    /// Roles the key acts with when policies decide (`developer`, `manager`, ...).
    pub roles: Vec<String>,
    /// The key's own rate limits and budget.
    pub limits: crate::Allowance,
}

impl KeyPolicy {
    /// Checks expiry and the CIDR allowlist for a request from `client` at `now` (unix seconds).
    pub fn check_caller(&self, now: i64, client: IpAddr) -> Result<(), ErrorCode> {
        if self.expires_at.is_some_and(|expiry| now >= expiry) {
            return Err(ErrorCode::KeyExpired);
        }
        let client = canonical_ip(client);
        if !self.allowed_cidrs.is_empty() && !self.allowed_cidrs.iter().any(|n| n.contains(&client))
        {
            return Err(ErrorCode::IpNotAllowed);
        }
        Ok(())
    }

    /// Whether the key's allowlist admits `model`.
    pub fn allows_model(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|m| m == model)
    }
}

/// Parses CIDR allowlist entries; a bare address means that one host.
pub fn parse_cidrs(entries: &[String]) -> Result<Vec<IpNet>, CoreError> {
    entries
        .iter()
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| CoreError::InvalidCidr(entry.chars().take(64).collect()))
        })
        .collect()
}

/// Whether `name` is 1-128 characters of ASCII letters, digits and `-_.:/@`: the form of every
/// name Routero accepts (models, resources, node ids), checked before anything else reads it.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/@".contains(&b))
}

/// The client address of a request from `peer`: the peer itself, or when the peer is a
/// trusted proxy, the right-most `X-Forwarded-For` hop (`forwarded`: the header's values, in
/// order) that is not itself a trusted proxy. A hop that does not parse ends the walk at the
/// last address a trusted proxy vouched for.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded: impl Iterator<Item = &'a str>,
    trusted: &[IpNet],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = canonical_ip(peer);
    if !is_trusted(&client) {
        return client;
    }
    let hops: Vec<&str> = forwarded.flat_map(|v| v.split(',')).collect();
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical_ip(ip);
                if !is_trusted(&client) {
                    return client;
                }
            }
            Err(_) => return client,
        }
    }
    client
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are compared as the IPv4 they carry.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn any_cidr_text_parses_or_is_refused_by_name(text in "\\PC{0,64}") {
            match parse_cidrs(std::slice::from_ref(&text)) {
                Ok(nets) => proptest::prop_assert_eq!(nets.len(), 1),
                Err(CoreError::InvalidCidr(shown)) => proptest::prop_assert!(shown.chars().count() <= 64),
                Err(other) => proptest::prop_assert!(false, "{other}"),
            }
        }

        #[test]
        fn valid_cidrs_round_trip(a in 0u8..=255, b in 0u8..=255, prefix in 0u8..=32) {
            let text = format!("{a}.{b}.0.0/{prefix}");
            let nets = parse_cidrs(&[text]).unwrap();
            proptest::prop_assert_eq!(parse_cidrs(&[nets[0].to_string()]).unwrap(), nets);
        }

        #[test]
        fn names_are_judged_without_panicking(text in "\\PC{0,200}") {
            let valid = is_valid_name(&text);
            proptest::prop_assert_eq!(valid, !text.is_empty() && text.len() <= 128 && text.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:/@".contains(c)));
        }
    }

    fn policy(cidrs: &[&str], expires_at: Option<i64>) -> KeyPolicy {
        KeyPolicy {
            key_id: "k".into(),
            tenant_id: "t".into(),
            team_id: None,
            user_id: None,
            models: vec!["gpt-a".into()],
            allowed_cidrs: parse_cidrs(&cidrs.iter().map(|c| c.to_string()).collect::<Vec<_>>())
                .unwrap(),
            expires_at,
            roles: Vec::new(),
            limits: crate::Allowance::default(),
        }
    }

    #[test]
    fn expiry_is_inclusive() {
        let p = policy(&[], Some(100));
        let ip = "127.0.0.1".parse().unwrap();
        assert_eq!(p.check_caller(99, ip), Ok(()));
        assert_eq!(p.check_caller(100, ip), Err(ErrorCode::KeyExpired));
    }

    #[test]
    fn cidr_allowlist_admits_only_its_networks() {
        let p = policy(&["10.0.0.0/8", "192.168.1.7"], None);
        assert_eq!(p.check_caller(0, "10.2.3.4".parse().unwrap()), Ok(()));
        assert_eq!(
            p.check_caller(0, "::ffff:10.2.3.4".parse().unwrap()),
            Ok(())
        );
        assert_eq!(p.check_caller(0, "192.168.1.7".parse().unwrap()), Ok(()));
        assert_eq!(
            p.check_caller(0, "192.168.1.8".parse().unwrap()),
            Err(ErrorCode::IpNotAllowed)
        );
        assert_eq!(
            p.check_caller(0, "127.0.0.1".parse().unwrap()),
            Err(ErrorCode::IpNotAllowed)
        );
    }

    #[test]
    fn model_allowlist() {
        let mut p = policy(&[], None);
        assert!(p.allows_model("gpt-a"));
        assert!(!p.allows_model("gpt-b"));
        p.models.clear();
        assert!(p.allows_model("gpt-b"));
    }

    #[test]
    fn bad_cidr_is_named() {
        assert_eq!(
            parse_cidrs(&["10.0.0.0/33".into()]),
            Err(CoreError::InvalidCidr("10.0.0.0/33".into()))
        );
    }
}
