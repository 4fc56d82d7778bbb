//! Who is calling: the client address (trusted proxies decide when `X-Forwarded-For` counts)
//! and the virtual key, checked against the snapshot.

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::HeaderMap;
use ipnet::IpNet;
use routero_core::{ErrorCode, KeyPolicy};

use crate::live::{Live, SnapshotCell};

/// An authenticated caller and the snapshot it was checked against.
pub struct Caller {
    /// The snapshot read once for this request.
    pub live: Arc<Live>,
    /// The key's policy.
    pub key: Arc<KeyPolicy>,
}

/// The client address: the peer, or when the peer is a trusted proxy, the right-most
/// `X-Forwarded-For` hop that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok());
    routero_core::client_ip(peer, forwarded, trusted)
}

/// The presented key: `Authorization: Bearer …` or `x-api-key`.
pub(crate) fn presented_key(headers: &HeaderMap) -> Option<&str> {
    routero_http::bearer(headers)
        .or_else(|| {
            headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        })
        .filter(|k| !k.is_empty())
}

/// Authenticates a request: fresh snapshot, known key, unexpired, from an allowed address.
pub fn authenticate(
    snapshots: &SnapshotCell,
    headers: &HeaderMap,
    client: IpAddr,
    now_unix: i64,
) -> Result<Caller, ErrorCode> {
    let live = snapshots
        .current()
        .ok_or(ErrorCode::ControlPlaneUnreachable)?;
    let presented = presented_key(headers).ok_or(ErrorCode::InvalidApiKey)?;
    let hash = live.hasher.hash(presented);
    let key = live
        .snapshot
        .key(&hash)
        .ok_or(ErrorCode::InvalidApiKey)?
        .clone();
    key.check_caller(now_unix, client)?;
    Ok(Caller { live, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in xff {
            map.append("x-forwarded-for", value.parse().unwrap());
        }
        map
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_claims() {
        let ip = client_ip(
            "203.0.113.9".parse().unwrap(),
            &headers(&["10.0.0.1"]),
            &nets(&["127.0.0.1/32"]),
        );
        assert_eq!(ip, "203.0.113.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn trusted_proxies_are_skipped_from_the_right() {
        let trusted = nets(&["127.0.0.0/8", "10.9.0.0/16"]);
        let h = headers(&["1.1.1.1, 198.51.100.7", "10.9.1.1"]);
        assert_eq!(
            client_ip("127.0.0.1".parse().unwrap(), &h, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn garbage_hop_stops_at_last_vouched_address() {
        let trusted = nets(&["127.0.0.0/8"]);
        let h = headers(&["1.1.1.1, not-an-ip"]);
        assert_eq!(
            client_ip("127.0.0.1".parse().unwrap(), &h, &trusted),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
    }

    proptest::proptest! {
        #[test]
        fn any_headers_are_read_without_panicking(
            authorization in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            api_key in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            forwarded in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
        ) {
            let mut h = HeaderMap::new();
            for (name, raw) in [("authorization", &authorization), ("x-api-key", &api_key), ("x-forwarded-for", &forwarded)] {
                if let Ok(value) = axum::http::HeaderValue::from_bytes(raw) {
                    h.insert(name, value);
                }
            }
            let _ = presented_key(&h);
            let _ = client_ip("127.0.0.1".parse().unwrap(), &h, &nets(&["127.0.0.0/8"]));
        }
    }

    #[test]
    fn key_from_bearer_or_x_api_key() {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "sk-rt-a".parse().unwrap());
        assert_eq!(presented_key(&h), Some("sk-rt-a"));
        h.insert(
            axum::http::header::AUTHORIZATION,
            "Bearer sk-rt-b".parse().unwrap(),
        );
        assert_eq!(presented_key(&h), Some("sk-rt-b"));
        h.insert(
            axum::http::header::AUTHORIZATION,
            "Basic Zm9v".parse().unwrap(),
        );
        assert_eq!(presented_key(&h), Some("sk-rt-a"));
    }
}
