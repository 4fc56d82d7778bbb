//! Routero's domain model: what a virtual key may do, where a model routes, and the snapshot
//! a data plane serves from. Nothing here performs I/O.
#![forbid(unsafe_code)]

mod allowance;
pub mod audit;
mod clock;
mod duration;
mod egress;
mod error;
mod error_code;
mod key;
mod period;
mod redact;
mod routing;
mod snapshot;
mod throttle;

pub use allowance::{
    Allowance, DEFAULT_THRESHOLDS, MAX_CHARGE_MICROS, Pricing, Usage, micros_to_usd,
    threshold_reached, usd_to_micros,
};
pub use clock::{unix_now, unix_now_ms};
pub use duration::{format_duration, parse_duration};
pub use egress::{EgressPolicy, ProviderHost, ProviderUrl};
pub use error::CoreError;
pub use error_code::{ErrorCode, Resource};
pub use key::{
    KEY_PREFIX, KeyHash, KeyPolicy, canonical_ip, client_ip, is_valid_name, parse_cidrs,
};
pub use period::Period;
pub use redact::{REDACTED, redact_url};
pub use routing::{DEFAULT_MAX_ATTEMPTS, DEFAULT_RETRY_BUDGET_PERCENT, Routing, Strategy};
pub use snapshot::{Deployment, ModelRoute, ProviderCredential, Snapshot};
pub use throttle::{Aggregate, AuthFailures, FailureLimits, Verdict};
