//! HTTP to identity providers under the operator's egress policy: every address a host
//! resolves to is checked when the connection is made (so a name cannot be rebound to an
//! internal address after it was saved), no redirects are followed, and answers are bounded in
//! time and size.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use routero_core::EgressPolicy;
use serde_json::Value;

use crate::OidcError;

/// The longest an identity provider may take to answer one request.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from an identity provider.
const MAX_BODY: usize = 1024 * 1024;

/// Resolves names with the system resolver and keeps only addresses the policy allows.
struct GuardedResolver(Arc<EgressPolicy>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.0);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed: Vec<SocketAddr> = found
                .filter(|address| policy.check(address.ip()).is_ok())
                .collect();
            if allowed.is_empty() {
                return Err(format!("{host}: no address the egress policy allows").into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// An HTTP client for identity providers.
#[derive(Clone)]
pub(crate) struct Fetcher {
    client: reqwest::Client,
    policy: Arc<EgressPolicy>,
}

impl Fetcher {
    pub(crate) fn new(policy: EgressPolicy) -> Result<Self, OidcError> {
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver(Arc::clone(&policy))))
            .build()
            .map_err(|error| OidcError::Settings(format!("HTTP client: {error}")))?;
        Ok(Self { client, policy })
    }

    /// Checks a URL before it is fetched: an address literal must be allowed by the policy
    /// (names are checked as they resolve).
    pub(crate) fn check(&self, url: &url::Url) -> Result<(), OidcError> {
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(OidcError::Settings(format!("{url}: no host"))),
        };
        if let Some(ip) = literal {
            self.policy.check(ip).map_err(|error| {
                OidcError::Settings(format!(
                    "{url}: {error} (the operator opens ranges with the egress_allow setting)"
                ))
            })?;
        }
        Ok(())
    }

    /// Sends `request` and reads its answer as JSON: `Ok(Err(status, body))` for an answer
    /// that is not a success.
    pub(crate) async fn json(
        &self,
        url: &url::Url,
        request: reqwest::RequestBuilder,
    ) -> Result<Result<Value, (u16, Value)>, OidcError> {
        self.check(url)?;
        let unavailable =
            |error: reqwest::Error| OidcError::Unavailable(format!("{}: {error}", url.as_str()));
        let mut response = request.send().await.map_err(unavailable)?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unavailable)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(OidcError::Unavailable(format!(
                    "{}: answer larger than {MAX_BODY} bytes",
                    url.as_str()
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let value = serde_json::from_slice(&body).map_err(|_| {
            OidcError::Unavailable(format!(
                "{}: answered {status} with a body that is not JSON",
                url.as_str()
            ))
        })?;
        Ok(if status.is_success() {
            Ok(value)
        } else {
            Err((status.as_u16(), value))
        })
    }

    /// `GET url` as JSON, a success required.
    pub(crate) async fn get(&self, url: &url::Url) -> Result<Value, OidcError> {
        let request = self.client.get(url.as_str());
        self.json(url, request).await?.map_err(|(status, _)| {
            OidcError::Unavailable(format!("{}: answered {status}", url.as_str()))
        })
    }

    /// The client, to build requests with.
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }
}
