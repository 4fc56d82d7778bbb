//! Provider base URLs as the control plane stores them: well-formed, and every address the host
//! resolves to allowed by the operator's egress policy. Data planes check again when they
//! connect, since a name can resolve differently later.

use routero_core::ErrorCode;
use std::net::IpAddr;
use std::time::Duration;

use routero_core::{EgressPolicy, ProviderHost, ProviderUrl};

use crate::ControlPlaneError;

/// How long a provider host may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks a base URL under `policy` and returns it in the form to store. A host name is
/// resolved and every address it resolves to must be allowed; a name that does not resolve is
/// refused, since nothing could be checked. Refusals are `invalid_base_url`,
/// `egress_not_allowed` and `base_url_unresolvable`.
pub(crate) async fn vet_base_url(
    policy: &EgressPolicy,
    base_url: &str,
) -> Result<String, ControlPlaneError> {
    let url = ProviderUrl::parse(base_url).map_err(|error| {
        ControlPlaneError::rejected(ErrorCode::InvalidBaseUrl, error.to_string())
    })?;
    let (addresses, via) = match url.host() {
        ProviderHost::Ip(ip) => (vec![*ip], String::new()),
        ProviderHost::Name(name) => (
            resolve(name, url.port()).await?,
            format!("{name} resolves to "),
        ),
    };
    for address in addresses {
        policy.check(address).map_err(|error| {
            ControlPlaneError::rejected(ErrorCode::BaseUrlNotAllowed,
                format!(
                    "base_url: {via}{error} (the operator opens ranges with the egress_allow setting)"
                ),
            )
        })?;
    }
    Ok(url.as_str().to_owned())
}

/// Every address `name` resolves to with the system resolver.
async fn resolve(name: &str, port: u16) -> Result<Vec<IpAddr>, ControlPlaneError> {
    let unresolvable = |why: String| {
        ControlPlaneError::rejected(
            ErrorCode::BaseUrlUnresolvable,
            format!(
                "base_url: {name} does not resolve from the control plane ({why}); every address a provider host resolves to is checked"
            ),
        )
    };
    let found = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port)))
        .await
        .map_err(|_| unresolvable("timed out".into()))?
        .map_err(|error| unresolvable(error.to_string()))?;
    let addresses: Vec<IpAddr> = found.map(|address| address.ip()).collect();
    if addresses.is_empty() {
        return Err(unresolvable("no addresses".into()));
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(result: Result<String, ControlPlaneError>) -> ErrorCode {
        match result {
            Err(ControlPlaneError::Rejected { code, .. }) => code,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn addresses_and_names_are_checked_under_the_policy() {
        let closed = EgressPolicy::default();
        for url in [
            "http://127.0.0.1:9/v1",
            "http://10.0.0.1/v1",
            "http://169.254.169.254/latest",
            "http://[::ffff:127.0.0.1]/v1",
            "http://[::1]/v1",
            "http://localhost:9/v1",
        ] {
            assert_eq!(
                code(vet_base_url(&closed, url).await),
                ErrorCode::BaseUrlNotAllowed,
                "{url}"
            );
        }
        assert_eq!(
            vet_base_url(&closed, "https://1.1.1.1/v1/").await.unwrap(),
            "https://1.1.1.1/v1"
        );
        let open = EgressPolicy::loopback();
        assert_eq!(
            vet_base_url(&open, "http://localhost:9/v1").await.unwrap(),
            "http://localhost:9/v1"
        );
        assert_eq!(
            code(vet_base_url(&open, "http://x/v1?key=1").await),
            ErrorCode::InvalidBaseUrl
        );
        assert_eq!(
            code(vet_base_url(&open, "http://no-such-host.invalid/v1").await),
            ErrorCode::BaseUrlUnresolvable
        );
    }
}
