//! A key's rate limits on a request, before it is sent: its requests and estimated tokens
//! counted (in this process, or in Redis for every replica) all or nothing; refused with
//! 429 `rate_limited` and `Retry-After` when a limit is reached, and with 503
//! `limits_unavailable` when the counters cannot be reached (never served uncounted). A served
//! answer says what is left, in OpenAI's `x-ratelimit-*` headers.

use axum::http::HeaderValue;
use axum::response::Response;
use routero_core::{ErrorCode, KeyPolicy};
use routero_limits::{Ask, Limits, RateAsk, RateKind, Verdict};
use serde_json::{Map, Value};

use crate::refusal::Refused;

/// The completion a request that names no `max_tokens` is assumed to ask for.
const DEFAULT_COMPLETION_TOKENS: u64 = 1024;

/// What is left of each of the key's limits after this request.
pub(crate) struct Left(Vec<(RateKind, u64, u64)>);

/// Counts the request against the key's limits (`completes`: whether it asks for a
/// completion, which its estimated tokens then include).
pub(crate) async fn count(
    limits: &Limits,
    key: &KeyPolicy,
    (request, completes): (&Map<String, Value>, bool),
    body_bytes: usize,
) -> Result<Left, Refused> {
    let name = format!("key:{}", key.key_id);
    let asked = [
        (RateKind::Requests, key.limits.rpm_limit, 1),
        (
            RateKind::Tokens,
            key.limits.tpm_limit,
            estimated_tokens(request, completes, body_bytes),
        ),
    ];
    let rates: Vec<RateAsk> = asked
        .into_iter()
        .filter_map(|(kind, limit, cost)| {
            limit.map(|per_minute| RateAsk {
                name: name.clone(),
                kind,
                per_minute,
                cost,
            })
        })
        .collect();
    if rates.is_empty() {
        return Ok(Left(Vec::new()));
    }
    let ask = Ask {
        budgets: Vec::new(),
        rates: rates.clone(),
    };
    match limits.reserve(&ask, routero_core::unix_now_ms()).await {
        Ok(Verdict::Granted(grant)) => Ok(Left(
            rates
                .iter()
                .zip(grant.remaining)
                .map(|(rate, (_, _, left))| (rate.kind, rate.per_minute, left))
                .collect(),
        )),
        Ok(Verdict::RateLimited {
            kind,
            retry_after_ms,
            ..
        }) => {
            let limit = match kind {
                RateKind::Requests => "rpm_limit",
                RateKind::Tokens => "tpm_limit",
            };
            let mut refused = Refused::from(ErrorCode::RateLimited);
            refused.detail = Some(format!(
                "This key's {limit} is reached; retry after the time given."
            ));
            refused.retry_after = Some(retry_after_ms.div_ceil(1000).max(1));
            Err(refused)
        }
        // No budget is asked here.
        Ok(Verdict::OverBudget { .. }) => Err(ErrorCode::LimitsUnavailable.into()),
        Err(error) => {
            tracing::error!(%error, "rate limits cannot be counted; the request is refused");
            Err(ErrorCode::LimitsUnavailable.into())
        }
    }
}

/// A request's tokens, estimated before it is sent: a token per four bytes of its body, and
/// for a completion the most it allows (the larger of `max_completion_tokens` and
/// `max_tokens`, a fraction rounded up, else 1,024), times its `n` choices.
fn estimated_tokens(request: &Map<String, Value>, completes: bool, body_bytes: usize) -> u64 {
    let prompt = u64::try_from(body_bytes / 4).unwrap_or(u64::MAX);
    if !completes {
        return prompt;
    }
    let number = |field: &str| {
        request
            .get(field)
            .and_then(Value::as_f64)
            .filter(|n| n.is_finite())
            .map(|n| n.max(0.0).ceil())
    };
    let allowed = ["max_completion_tokens", "max_tokens"]
        .into_iter()
        .filter_map(number)
        .fold(None, |most: Option<f64>, n| {
            Some(most.map_or(n, |m| m.max(n)))
        });
    // `as` saturates a float beyond u64 to u64::MAX.
    let completion = allowed.map_or(DEFAULT_COMPLETION_TOKENS, |n| n as u64);
    let choices = number("n").map_or(1, |n| (n as u64).max(1));
    prompt.saturating_add(completion.saturating_mul(choices))
}

impl Left {
    /// Adds `x-ratelimit-limit-*` and `x-ratelimit-remaining-*` to a served answer.
    pub(crate) fn tell(&self, mut response: Response) -> Response {
        for (kind, limit, left) in &self.0 {
            let unit = match kind {
                RateKind::Requests => "requests",
                RateKind::Tokens => "tokens",
            };
            let headers = response.headers_mut();
            for (name, value) in [("limit", limit), ("remaining", left)] {
                if let (Ok(header), Ok(value)) = (
                    axum::http::HeaderName::try_from(format!("x-ratelimit-{name}-{unit}")),
                    HeaderValue::try_from(value.to_string()),
                ) {
                    headers.insert(header, value);
                }
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_estimated_from_the_body_and_the_completion_allowed() {
        let mut request = Map::new();
        assert_eq!(
            estimated_tokens(&request, true, 400),
            100 + DEFAULT_COMPLETION_TOKENS
        );
        assert_eq!(
            estimated_tokens(&request, false, 400),
            100,
            "embeddings complete nothing"
        );
        request.insert("max_tokens".into(), Value::from(50));
        assert_eq!(estimated_tokens(&request, true, 400), 150);
        // The larger of the two fields counts: a provider may read either.
        request.insert("max_completion_tokens".into(), Value::from(20));
        assert_eq!(estimated_tokens(&request, true, 400), 150);
        request.insert("max_tokens".into(), Value::from(4096.5));
        assert_eq!(estimated_tokens(&request, true, 0), 4097);
        request.insert("n".into(), Value::from(128));
        assert_eq!(estimated_tokens(&request, true, 0), 4097 * 128);
        request.insert("max_tokens".into(), Value::from(-5));
        request.insert("max_completion_tokens".into(), Value::from(1e300));
        assert_eq!(estimated_tokens(&request, true, 0), u64::MAX);
    }
}
