use thiserror::Error;

/// Errors raised by the domain rules of this crate.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CoreError {
    /// A duration string such as `30d` did not parse.
    #[error("invalid duration {0:?}: use a positive whole number followed by s, m, h or d")]
    InvalidDuration(String),
    /// A CIDR allowlist entry did not parse.
    #[error("invalid CIDR {0:?}")]
    InvalidCidr(String),
    /// A key hash did not have 32 bytes.
    #[error("key hash must be 32 bytes, got {0}")]
    InvalidKeyHash(usize),
    /// A provider base URL is not an http(s) URL with a host and nothing hidden.
    #[error("base_url: {0}")]
    InvalidBaseUrl(&'static str),
    /// The egress policy does not allow a provider at this address.
    #[error("{address} is {range}, which the egress policy does not allow")]
    EgressRefused {
        /// The address refused.
        address: std::net::IpAddr,
        /// The restricted range it is in.
        range: &'static str,
    },
}
