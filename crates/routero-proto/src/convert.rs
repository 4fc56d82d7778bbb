//! Conversions between wire messages and domain types.

use routero_core::{
    Allowance, Deployment, KeyHash, KeyPolicy, ModelRoute, Pricing, Routing, Strategy, parse_cidrs,
};

use crate::ProtoError;
use crate::v1;

impl TryFrom<&v1::VirtualKey> for (KeyHash, KeyPolicy) {
    type Error = ProtoError;

    fn try_from(key: &v1::VirtualKey) -> Result<Self, ProtoError> {
        let hash = KeyHash::from_slice(&key.key_hash).map_err(|e| ProtoError::Invalid {
            field: "key_hash",
            reason: e.to_string(),
        })?;
        let allowed_cidrs = parse_cidrs(&key.allowed_cidrs).map_err(|e| ProtoError::Invalid {
            field: "allowed_cidrs",
            reason: e.to_string(),
        })?;
        Ok((
            hash,
            KeyPolicy {
                key_id: key.key_id.clone(),
                tenant_id: key.tenant_id.clone(),
                team_id: key.team_id.clone(),
                user_id: key.user_id.clone(),
                models: key.models.clone(),
                allowed_cidrs,
                expires_at: key.expires_at,
                roles: key.roles.clone(),
                limits: key
                    .allowance
                    .as_ref()
                    .map(Allowance::from)
                    .unwrap_or_default(),
            },
        ))
    }
}

impl TryFrom<&v1::ModelRoute> for ModelRoute {
    type Error = ProtoError;

    fn try_from(route: &v1::ModelRoute) -> Result<Self, ProtoError> {
        let name = route.name.as_ref().ok_or(ProtoError::Invalid {
            field: "route.name",
            reason: "missing".into(),
        })?;
        Ok(ModelRoute {
            tenant_id: name.tenant_id.clone(),
            name: name.name.clone(),
            deployments: route
                .deployments
                .iter()
                .map(|d| Deployment {
                    credential_id: d.credential_id.clone(),
                    upstream_model: d.model.clone(),
                    weight: d.weight.max(1),
                })
                .collect(),
            tags: route
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            pricing: route.pricing.as_ref().map(Pricing::from),
            routing: route
                .routing
                .as_ref()
                .map(Routing::from)
                .unwrap_or_default(),
        })
    }
}

impl From<&v1::Routing> for Routing {
    fn from(routing: &v1::Routing) -> Self {
        Self {
            // A strategy this data plane does not know (a newer control plane's) routes in
            // priority order rather than taking the route away.
            strategy: Strategy::named(&routing.strategy).unwrap_or_default(),
            max_attempts: routing.max_attempts,
            retry_budget_percent: routing.retry_budget_percent,
            ttfb_timeout_ms: routing.ttfb_timeout_ms,
            timeout_ms: routing.timeout_ms,
        }
    }
}

impl From<&Routing> for v1::Routing {
    fn from(routing: &Routing) -> Self {
        Self {
            strategy: routing.strategy.name().to_owned(),
            max_attempts: routing.max_attempts,
            retry_budget_percent: routing.retry_budget_percent,
            ttfb_timeout_ms: routing.ttfb_timeout_ms,
            timeout_ms: routing.timeout_ms,
        }
    }
}

impl From<&ModelRoute> for v1::ModelRoute {
    fn from(route: &ModelRoute) -> Self {
        Self {
            name: Some(v1::RouteName {
                tenant_id: route.tenant_id.clone(),
                name: route.name.clone(),
            }),
            deployments: route
                .deployments
                .iter()
                .map(|d| v1::Deployment {
                    credential_id: d.credential_id.clone(),
                    model: d.upstream_model.clone(),
                    weight: d.weight,
                })
                .collect(),
            tags: route
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            pricing: route.pricing.as_ref().map(v1::Pricing::from),
            routing: Some(v1::Routing::from(&route.routing)),
        }
    }
}

impl From<&v1::Pricing> for Pricing {
    fn from(p: &v1::Pricing) -> Self {
        Self {
            input_micros_per_mtok: p.input_micros_per_mtok,
            output_micros_per_mtok: p.output_micros_per_mtok,
            cached_input_micros_per_mtok: p.cached_input_micros_per_mtok,
            default_max_tokens: p.default_max_tokens,
        }
    }
}

impl From<&Pricing> for v1::Pricing {
    fn from(p: &Pricing) -> Self {
        Self {
            input_micros_per_mtok: p.input_micros_per_mtok,
            output_micros_per_mtok: p.output_micros_per_mtok,
            cached_input_micros_per_mtok: p.cached_input_micros_per_mtok,
            default_max_tokens: p.default_max_tokens,
        }
    }
}

impl From<&v1::Allowance> for Allowance {
    fn from(a: &v1::Allowance) -> Self {
        Self {
            rpm_limit: a.rpm_limit,
            tpm_limit: a.tpm_limit,
            max_budget_micros: a.max_budget_micros,
            budget_duration: a.budget_duration.clone(),
            budget_thresholds: a
                .budget_thresholds
                .iter()
                .filter_map(|p| u8::try_from(*p).ok())
                .collect(),
            fail_open: a.fail_open,
        }
    }
}

impl From<&Allowance> for v1::Allowance {
    fn from(a: &Allowance) -> Self {
        Self {
            rpm_limit: a.rpm_limit,
            tpm_limit: a.tpm_limit,
            max_budget_micros: a.max_budget_micros,
            budget_duration: a.budget_duration.clone(),
            budget_thresholds: a.budget_thresholds.iter().map(|p| u32::from(*p)).collect(),
            fail_open: a.fail_open,
        }
    }
}
