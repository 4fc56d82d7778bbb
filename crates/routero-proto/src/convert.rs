//! Conversions between wire messages and domain types.

use routero_core::{Deployment, KeyHash, KeyPolicy, ModelRoute, parse_cidrs};

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
                limits: routero_core::KeyLimits {
                    rpm_limit: key.rpm_limit,
                    tpm_limit: key.tpm_limit,
                },
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
                })
                .collect(),
            tags: route
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
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
                })
                .collect(),
            tags: route
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}
