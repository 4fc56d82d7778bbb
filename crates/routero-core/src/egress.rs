//! Provider egress: which base URLs a credential may have, and which addresses the gateway may
//! connect to on a provider's behalf.
//!
//! Loopback, private, link-local (cloud metadata services answer at 169.254.169.254),
//! carrier-grade NAT, multicast, documentation and other special-purpose ranges are refused
//! unless the operator's allowlist opens them (on-premises models). An IPv6 address that
//! carries an IPv4 one (`::ffff:127.0.0.1`, `::127.0.0.1`, NAT64, 6to4) is judged as that
//! IPv4 address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::CoreError;

/// Longest base URL accepted.
const MAX_URL_LEN: usize = 2048;

/// IPv4 ranges no provider is reached at unless allowed, most specific first.
const RESTRICTED_V4: &[(Ipv4Net, &str)] = &[
    (v4([0, 0, 0, 0], 8), "unspecified (this network)"),
    (v4([10, 0, 0, 0], 8), "private"),
    (
        v4([100, 64, 0, 0], 10),
        "shared address space (carrier-grade NAT)",
    ),
    (v4([127, 0, 0, 0], 8), "loopback"),
    (v4([169, 254, 0, 0], 16), "link-local (cloud metadata)"),
    (v4([172, 16, 0, 0], 12), "private"),
    (
        v4([192, 0, 0, 0], 24),
        "special-purpose (IETF protocol assignments)",
    ),
    (v4([192, 0, 2, 0], 24), "documentation"),
    (
        v4([192, 88, 99, 0], 24),
        "special-purpose (6to4 relay anycast)",
    ),
    (v4([192, 168, 0, 0], 16), "private"),
    (v4([198, 18, 0, 0], 15), "benchmarking"),
    (v4([198, 51, 100, 0], 24), "documentation"),
    (v4([203, 0, 113, 0], 24), "documentation"),
    (v4([224, 0, 0, 0], 4), "multicast"),
    (v4([255, 255, 255, 255], 32), "broadcast"),
    (v4([240, 0, 0, 0], 4), "reserved"),
];

/// IPv6 ranges no provider is reached at unless allowed (after IPv4-carrying forms are judged
/// as their IPv4 address), most specific first.
const RESTRICTED_V6: &[(Ipv6Net, &str)] = &[
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "unspecified"),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback"),
    (
        v6([0, 0, 0, 0, 0, 0, 0, 0], 96),
        "special-purpose (IPv4-compatible)",
    ),
    (
        v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        "special-purpose (local NAT64)",
    ),
    (
        v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
        "special-purpose (discard)",
    ),
    (v6([0x2001, 0x2, 0, 0, 0, 0, 0, 0], 48), "benchmarking"),
    (
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
        "special-purpose (IETF protocol assignments, Teredo)",
    ),
    (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), "documentation"),
    (v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), "documentation"),
    (
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        "private (unique local)",
    ),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "link-local"),
    (
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        "private (site-local)",
    ),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
];

const fn v4(octets: [u8; 4], prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(
        Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]),
        prefix,
    )
}

const fn v6(segments: [u16; 8], prefix: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix)
}

/// The IPv4 address an IPv6 one carries: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) or 6to4 (`2002:aabb:ccdd::`).
fn carried_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => Some(low(hi, lo)),
        // `::` and `::1` are not IPv4-compatible addresses.
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 => Some(low(hi, lo)),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(low(hi, lo)),
        [0x2002, hi, lo, ..] => Some(low(hi, lo)),
        _ => None,
    }
}

/// The address an address is judged as: the IPv4 address an IPv6 one carries, else itself.
fn judged(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => carried_ipv4(v6).map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The restricted range `ip` falls in, if any, named.
fn restriction(ip: IpAddr) -> Option<&'static str> {
    match judged(ip) {
        IpAddr::V4(v4) => RESTRICTED_V4
            .iter()
            .find(|(net, _)| net.contains(&v4))
            .map(|(_, name)| *name),
        IpAddr::V6(v6) => RESTRICTED_V6
            .iter()
            .find(|(net, _)| net.contains(&v6))
            .map(|(_, name)| *name),
    }
}

/// Which addresses providers may be reached at: every address outside the restricted ranges,
/// and those the operator's allowlist opens. Pure logic; resolving names is the caller's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    allow: Vec<IpNet>,
}

impl EgressPolicy {
    /// The default policy, with `allow` opened.
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    /// Loopback opened (127.0.0.0/8 and ::1): local models on the same host.
    pub fn loopback() -> Self {
        Self::new(vec![
            IpNet::V4(v4([127, 0, 0, 0], 8)),
            IpNet::V6(v6([0, 0, 0, 0, 0, 0, 0, 1], 128)),
        ])
    }

    /// The ranges the operator opened.
    pub fn allowlist(&self) -> &[IpNet] {
        &self.allow
    }

    /// Whether a provider may be reached at `ip`; the refusal names the range.
    pub fn check(&self, ip: IpAddr) -> Result<(), CoreError> {
        let as_judged = judged(ip);
        if self
            .allow
            .iter()
            .any(|net| net.contains(&as_judged) || net.contains(&ip))
        {
            return Ok(());
        }
        match restriction(ip) {
            Some(range) => Err(CoreError::EgressRefused { address: ip, range }),
            None => Ok(()),
        }
    }
}

/// Where a provider's host is: an address, or a name to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderHost {
    /// An address literal, connected to without resolution.
    Ip(IpAddr),
    /// A host name.
    Name(String),
}

/// A provider base URL that is well-formed: `http` or `https`, a host, no user information, no
/// query, no fragment. Parsed as the data plane's HTTP client parses it (WHATWG URL), so the
/// host checked is the host connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderUrl {
    url: String,
    host: ProviderHost,
    port: u16,
}

impl ProviderUrl {
    /// Parses and checks a base URL.
    pub fn parse(text: &str) -> Result<Self, CoreError> {
        let invalid = |why: &'static str| CoreError::InvalidBaseUrl(why);
        if text.len() > MAX_URL_LEN {
            return Err(invalid("longer than 2048 bytes"));
        }
        // The URL parser silently drops whitespace and control characters; refuse them.
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("contains whitespace or control characters"));
        }
        let url = url::Url::parse(text).map_err(|_| invalid("not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        if !url.username().is_empty() || url.password().is_some() || authority_has_at(text) {
            return Err(invalid("user information (user:password@) is not allowed"));
        }
        if url.query().is_some() {
            return Err(invalid("a query (?...) is not allowed"));
        }
        if url.fragment().is_some() {
            return Err(invalid("a fragment (#...) is not allowed"));
        }
        let host = match url.host() {
            Some(url::Host::Ipv4(ip)) => ProviderHost::Ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => ProviderHost::Ip(IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) if !name.is_empty() => {
                ProviderHost::Name(name.to_owned())
            }
            _ => return Err(invalid("a host is required")),
        };
        let port = url
            .port_or_known_default()
            .ok_or(invalid("no port for the scheme"))?;
        Ok(Self {
            url: url.as_str().trim_end_matches('/').to_owned(),
            host,
            port,
        })
    }

    /// The URL in normal form (host lowercased, addresses in canonical form), without a
    /// trailing slash.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// The host.
    pub fn host(&self) -> &ProviderHost {
        &self.host
    }

    /// The port, explicit or the scheme's.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Whether the authority of `text` (between `//` and the path) holds an `@`, even with empty
/// user information (`http://@host`), which the URL parser drops.
fn authority_has_at(text: &str) -> bool {
    text.split_once("//").is_some_and(|(_, rest)| {
        rest.split(['/', '?', '#'])
            .next()
            .is_some_and(|authority| authority.contains('@'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn refused(policy: &EgressPolicy, text: &str) -> &'static str {
        match policy.check(ip(text)) {
            Err(CoreError::EgressRefused { range, .. }) => range,
            other => panic!("{text}: expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn every_restricted_range_is_refused_by_default() {
        let policy = EgressPolicy::default();
        for (address, range) in [
            ("0.0.0.0", "unspecified (this network)"),
            ("0.1.2.3", "unspecified (this network)"),
            ("10.0.0.1", "private"),
            ("10.255.255.255", "private"),
            ("100.64.0.1", "shared address space (carrier-grade NAT)"),
            (
                "100.127.255.254",
                "shared address space (carrier-grade NAT)",
            ),
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("169.254.169.254", "link-local (cloud metadata)"),
            ("169.254.0.1", "link-local (cloud metadata)"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.0.0.8", "special-purpose (IETF protocol assignments)"),
            ("192.0.2.10", "documentation"),
            ("192.88.99.1", "special-purpose (6to4 relay anycast)"),
            ("192.168.1.1", "private"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "broadcast"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::0.0.1.2", "special-purpose (IPv4-compatible)"),
            ("64:ff9b:1::1", "special-purpose (local NAT64)"),
            ("100::1", "special-purpose (discard)"),
            ("2001:2::1", "benchmarking"),
            (
                "2001::1",
                "special-purpose (IETF protocol assignments, Teredo)",
            ),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation"),
            ("fc00::1", "private (unique local)"),
            ("fd12:3456::1", "private (unique local)"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "private (site-local)"),
            ("ff02::1", "multicast"),
        ] {
            assert_eq!(refused(&policy, address), range, "{address}");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        let policy = EgressPolicy::default();
        for address in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "2a00:1450::1",
        ] {
            assert_eq!(
                EgressPolicy::check(&policy, ip(address)),
                Ok(()),
                "{address}"
            );
        }
    }

    #[test]
    fn ipv6_forms_carrying_ipv4_are_judged_as_that_address() {
        let policy = EgressPolicy::default();
        for (address, range) in [
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:7f00:1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "link-local (cloud metadata)"),
            ("::127.0.0.1", "loopback"),
            ("::10.1.2.3", "private"),
            ("64:ff9b::127.0.0.1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "link-local (cloud metadata)"),
            ("2002:7f00:1::", "loopback"),
            ("2002:c0a8:101::1", "private"),
            ("::ffff:0.0.0.0", "unspecified (this network)"),
        ] {
            assert_eq!(refused(&policy, address), range, "{address}");
        }
        for public in ["::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"] {
            assert_eq!(policy.check(ip(public)), Ok(()), "{public}");
        }
    }

    #[test]
    fn the_allowlist_opens_its_ranges_and_nothing_else() {
        let policy = EgressPolicy::new(
            crate::parse_cidrs(&["10.20.0.0/16".into(), "127.0.0.1/32".into()]).unwrap(),
        );
        assert_eq!(policy.check(ip("10.20.3.4")), Ok(()));
        assert_eq!(policy.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(policy.check(ip("::ffff:127.0.0.1")), Ok(()), "mapped");
        assert_eq!(policy.check(ip("::ffff:10.20.0.9")), Ok(()), "mapped");
        assert_eq!(refused(&policy, "10.21.0.1"), "private");
        assert_eq!(refused(&policy, "127.0.0.2"), "loopback");
        assert_eq!(refused(&policy, "::1"), "loopback");
        assert_eq!(
            refused(&policy, "169.254.169.254"),
            "link-local (cloud metadata)"
        );

        let loopback = EgressPolicy::loopback();
        for address in ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(loopback.check(ip(address)), Ok(()), "{address}");
        }
        assert_eq!(refused(&loopback, "10.0.0.1"), "private");
        assert_eq!(
            refused(&loopback, "169.254.169.254"),
            "link-local (cloud metadata)"
        );
        assert_eq!(loopback.allowlist().len(), 2);

        let v6 = EgressPolicy::new(crate::parse_cidrs(&["fd00::/8".into()]).unwrap());
        assert_eq!(v6.check(ip("fd00::5")), Ok(()));
        assert_eq!(refused(&v6, "fc00::5"), "private (unique local)");
    }

    #[test]
    fn base_urls_are_http_with_a_host_and_nothing_hidden() {
        let ok = ProviderUrl::parse("https://api.openai.com/v1/").unwrap();
        assert_eq!(ok.as_str(), "https://api.openai.com/v1");
        assert_eq!(ok.host(), &ProviderHost::Name("api.openai.com".into()));
        assert_eq!(ok.port(), 443);
        let local = ProviderUrl::parse("http://127.0.0.1:9999/v1").unwrap();
        assert_eq!(local.host(), &ProviderHost::Ip(ip("127.0.0.1")));
        assert_eq!(local.port(), 9999);
        assert_eq!(
            ProviderUrl::parse("HTTP://API.Example.COM:80/v1")
                .unwrap()
                .as_str(),
            "http://api.example.com/v1"
        );
        for (url, why) in [
            ("ftp://x/v1", "the scheme must be http or https"),
            ("file:///etc/passwd", "the scheme must be http or https"),
            ("javascript:alert(1)", "the scheme must be http or https"),
            (
                "http://user:pw@x/v1",
                "user information (user:password@) is not allowed",
            ),
            (
                "http://user@x/v1",
                "user information (user:password@) is not allowed",
            ),
            (
                "http://@x/v1",
                "user information (user:password@) is not allowed",
            ),
            ("http://x/v1?api-version=1", "a query (?...) is not allowed"),
            ("http://x/v1?", "a query (?...) is not allowed"),
            ("http://x/v1#frag", "a fragment (#...) is not allowed"),
            ("http://x/v1#", "a fragment (#...) is not allowed"),
            ("http://x /v1", "contains whitespace or control characters"),
            ("http://x/v1\n", "contains whitespace or control characters"),
            (
                "http://x\t.example/v1",
                "contains whitespace or control characters",
            ),
            ("not a url", "contains whitespace or control characters"),
            ("nourl", "not a URL"),
            ("http://", "not a URL"),
        ] {
            assert_eq!(
                ProviderUrl::parse(url),
                Err(CoreError::InvalidBaseUrl(why)),
                "{url}"
            );
        }
        let long = format!("https://x/{}", "a".repeat(2048));
        assert!(ProviderUrl::parse(&long).is_err());
    }

    #[test]
    fn address_literals_in_any_spelling_are_found() {
        for (url, address) in [
            ("http://[::ffff:127.0.0.1]/v1", "::ffff:127.0.0.1"),
            ("http://[::1]:8000/v1", "::1"),
            ("http://0x7f.1/v1", "127.0.0.1"),
            ("http://2130706433/v1", "127.0.0.1"),
            ("http://0177.0.0.1/v1", "127.0.0.1"),
            ("http://127.1/v1", "127.0.0.1"),
            ("http://169.254.169.254./v1", "169.254.169.254"),
        ] {
            let parsed = ProviderUrl::parse(url).unwrap();
            assert_eq!(parsed.host(), &ProviderHost::Ip(ip(address)), "{url}");
            assert!(EgressPolicy::default().check(ip(address)).is_err(), "{url}");
        }
    }

    proptest! {
        #[test]
        fn any_mapped_address_is_judged_as_its_ipv4(raw in any::<u32>()) {
            let v4 = Ipv4Addr::from(raw);
            let policy = EgressPolicy::default();
            let expected = policy.check(IpAddr::V4(v4)).is_ok();
            prop_assert_eq!(policy.check(IpAddr::V6(v4.to_ipv6_mapped())).is_ok(), expected);
            prop_assert_eq!(policy.check(IpAddr::V6(v4.to_ipv6_compatible())).is_ok(), expected);
            let allowed = EgressPolicy::new(vec![IpNet::from(IpAddr::V4(v4))]);
            prop_assert!(allowed.check(IpAddr::V4(v4)).is_ok());
            prop_assert!(allowed.check(IpAddr::V6(v4.to_ipv6_mapped())).is_ok());
        }

        #[test]
        fn refusals_agree_with_the_standard_library(raw in any::<u32>()) {
            let v4 = Ipv4Addr::from(raw);
            let refused = EgressPolicy::default().check(IpAddr::V4(v4)).is_err();
            if v4.is_private() || v4.is_loopback() || v4.is_link_local() || v4.is_multicast()
                || v4.is_broadcast() || v4.is_documentation() || v4.is_unspecified()
            {
                prop_assert!(refused, "{v4}");
            }
        }

        #[test]
        fn an_allowlist_entry_opens_exactly_its_network(raw in any::<u32>(), prefix in 8u8..=32, probe in any::<u32>()) {
            let net = Ipv4Net::new(Ipv4Addr::from(raw), prefix).unwrap().trunc();
            let policy = EgressPolicy::new(vec![IpNet::V4(net)]);
            let probe = Ipv4Addr::from(probe);
            let by_default = EgressPolicy::default().check(IpAddr::V4(probe)).is_ok();
            prop_assert_eq!(policy.check(IpAddr::V4(probe)).is_ok(), by_default || net.contains(&probe));
        }
    }
}
