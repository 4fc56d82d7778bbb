//! Provider host names resolved under the egress policy, at every connection: the system
//! resolver's answers less every address the policy refuses, so a name that has come to
//! resolve to a refused address (DNS rebinding: loopback, cloud metadata) is never connected
//! to, whatever it resolved to when the credential was saved.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use routero_core::{EgressPolicy, ErrorCode};

use crate::DataPlaneError;

/// Resolves a host name to addresses.
pub(crate) type Lookup =
    Arc<dyn Fn(String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> + Send + Sync>;

/// The system resolver (`getaddrinfo`).
pub(crate) fn system_lookup() -> Lookup {
    Arc::new(|host: String| {
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(found.map(|address| address.ip()).collect())
        })
    })
}

/// The provider client's resolver: `lookup`, filtered by `policy`. When every address is
/// refused, resolution fails with [`DataPlaneError::Egress`], which requests see as
/// [`ErrorCode::EgressNotAllowed`].
pub(crate) struct EgressResolver {
    policy: Arc<EgressPolicy>,
    lookup: Lookup,
}

impl EgressResolver {
    /// A resolver that asks `lookup` and keeps what `policy` allows.
    pub(crate) fn new(policy: EgressPolicy, lookup: Lookup) -> Self {
        Self {
            policy: Arc::new(policy),
            lookup,
        }
    }
}

impl Resolve for EgressResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let policy = Arc::clone(&self.policy);
        let lookup = (self.lookup)(host.clone());
        Box::pin(async move {
            let mut allowed = Vec::new();
            let mut refused = None;
            for ip in lookup.await? {
                match policy.check(ip) {
                    Ok(()) => allowed.push(SocketAddr::new(ip, 0)),
                    Err(error) => {
                        tracing::warn!(%host, %error, "provider address refused by the egress policy");
                        refused = Some(error);
                    }
                }
            }
            match refused {
                Some(error) if allowed.is_empty() => Err(DataPlaneError::Egress(error).into()),
                _ => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}

/// The refusal a request gets for a provider it could not use: `egress_not_allowed` when the
/// egress policy refused its address, else `upstream_unreachable`.
pub(crate) fn refusal(error: &DataPlaneError) -> ErrorCode {
    match error {
        DataPlaneError::Egress(routero_core::CoreError::EgressRefused { .. }) => {
            ErrorCode::EgressNotAllowed
        }
        _ => ErrorCode::UpstreamUnreachable,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use routero_core::ProviderCredential;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::DataPlaneConfig;
    use crate::provider::{Endpoint, Provider, Upstream};

    /// A provider on `ip` (`port` 0: any) that answers every request and counts the
    /// connections it accepted.
    async fn listener(ip: &str, port: u16) -> (u16, Arc<Mutex<usize>>) {
        let listener = TcpListener::bind((ip, port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(Mutex::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                *count.lock().unwrap() += 1;
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
                    .await;
            }
        });
        (port, accepted)
    }

    /// A lookup answering whatever `answer` holds at the time: a name an attacker re-points.
    fn rebinding(answer: Arc<Mutex<Vec<IpAddr>>>) -> Lookup {
        Arc::new(move |_host: String| {
            let found = answer.lock().unwrap().clone();
            Box::pin(async move { Ok(found) })
        })
    }

    fn credential(base_url: String) -> ProviderCredential {
        ProviderCredential {
            id: "cred_1".into(),
            tenant_id: "t".into(),
            provider: "openai".into(),
            base_url,
            api_key: "sk-provider".to_owned().into(),
        }
    }

    fn config(allow: &[&str]) -> DataPlaneConfig {
        let mut config = DataPlaneConfig::new(
            "http://127.0.0.1:1".into(),
            routero_crypto::SealingKey::generate().unwrap(),
        );
        let allow: Vec<String> = allow.iter().map(|a| (*a).to_owned()).collect();
        config.egress = EgressPolicy::new(routero_core::parse_cidrs(&allow).unwrap());
        config
    }

    /// An empty chat request prepared for `upstream`.
    fn send(upstream: &Upstream) -> crate::provider::Outgoing {
        upstream
            .request(Endpoint::ChatCompletions, "m", &serde_json::Map::new())
            .unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn a_name_rebound_to_a_refused_address_is_never_connected_to() {
        // The same port on 127.0.0.2 (allowed) and 127.0.0.1 (refused).
        let (port, allowed_hits) = listener("127.0.0.2", 0).await;
        let (_, refused_hits) = listener("127.0.0.1", port).await;
        let config = config(&["127.0.0.2/32"]);
        let answer = Arc::new(Mutex::new(vec![ip("127.0.0.2")]));
        let provider = Provider::with_lookup(&config, rebinding(Arc::clone(&answer))).unwrap();
        let upstream = Upstream::prepare(
            &credential(format!("http://provider.test:{port}/v1")),
            &config.egress,
        )
        .unwrap();

        // Saved while the name resolved to an allowed address: connected to.
        let response = provider.forward(&upstream, send(&upstream)).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(*allowed_hits.lock().unwrap(), 1);

        // Rebound to loopback: refused before any connection.
        *answer.lock().unwrap() = vec![ip("127.0.0.1")];
        let refusal = provider
            .forward(&upstream, send(&upstream))
            .await
            .unwrap_err();
        assert_eq!(refusal.refusal, ErrorCode::EgressNotAllowed);
        assert_eq!(
            *refused_hits.lock().unwrap(),
            0,
            "the refused address got a connection"
        );

        // Rebound to both: only the allowed one is used.
        *answer.lock().unwrap() = vec![ip("127.0.0.1"), ip("127.0.0.2")];
        provider.forward(&upstream, send(&upstream)).await.unwrap();
        assert_eq!(*refused_hits.lock().unwrap(), 0);
        assert_eq!(*allowed_hits.lock().unwrap(), 2);

        // Cloud metadata, and its IPv4-mapped form.
        for metadata in ["169.254.169.254", "::ffff:169.254.169.254"] {
            *answer.lock().unwrap() = vec![ip(metadata)];
            let refusal = provider
                .forward(&upstream, send(&upstream))
                .await
                .unwrap_err();
            assert_eq!(refusal.refusal, ErrorCode::EgressNotAllowed, "{metadata}");
        }
    }

    #[tokio::test]
    async fn the_system_resolver_is_filtered_too() {
        let (port, hits) = listener("127.0.0.1", 0).await;
        let upstream_url = format!("http://localhost:{port}/v1");
        let closed = config(&[]);
        let provider = Provider::new(&closed).unwrap();
        let upstream =
            Upstream::prepare(&credential(upstream_url.clone()), &closed.egress).unwrap();
        let refusal = provider
            .forward(&upstream, send(&upstream))
            .await
            .unwrap_err();
        assert_eq!(refusal.refusal, ErrorCode::EgressNotAllowed);
        assert_eq!(*hits.lock().unwrap(), 0);

        let open = config(&["127.0.0.0/8", "::1/128"]);
        let provider = Provider::new(&open).unwrap();
        let upstream = Upstream::prepare(&credential(upstream_url), &open.egress).unwrap();
        provider.forward(&upstream, send(&upstream)).await.unwrap();
        assert_eq!(*hits.lock().unwrap(), 1);
    }

    #[test]
    fn address_literals_are_refused_when_the_snapshot_is_applied() {
        let closed = config(&[]);
        for url in [
            "http://127.0.0.1:8000/v1",
            "http://10.0.0.1/v1",
            "http://169.254.169.254/v1",
            "http://[::ffff:127.0.0.1]/v1",
            "http://[::1]/v1",
            "http://0x7f.1/v1",
        ] {
            let error = Upstream::prepare(&credential(url.into()), &closed.egress).unwrap_err();
            assert_eq!(refusal(&error), ErrorCode::EgressNotAllowed, "{url}");
        }
        let error =
            Upstream::prepare(&credential("http://x/v1?a=1".into()), &closed.egress).unwrap_err();
        assert_eq!(refusal(&error), ErrorCode::UpstreamUnreachable);
        let open = config(&["127.0.0.1/32"]);
        assert!(
            Upstream::prepare(&credential("http://127.0.0.1:8000/v1".into()), &open.egress).is_ok()
        );
        assert!(
            Upstream::prepare(
                &credential("http://[::ffff:127.0.0.1]/v1".into()),
                &open.egress
            )
            .is_ok()
        );
    }
}
