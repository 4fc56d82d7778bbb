//! Authentication of the snapshot channel, with or without TLS: every message the control
//! plane sends is stamped with its sending time and tagged (HMAC-SHA256 under a key derived
//! from the shared data-plane key); a data plane checks the tag before anything else and
//! refuses stale or replayed stamps. Watching requires a credential derived from the same key:
//! the node's id and the time, tagged.

use prost::Message as _;
use routero_crypto::{MessageKey, Purpose, SealingKey};

use crate::ProtoError;
use crate::v1::SnapshotMessage;

/// The metadata key carrying a data plane's watch credential.
pub const CREDENTIAL_METADATA: &str = "x-routero-watch-credential";

/// How far a stamp or credential time may be from the receiver's clock.
pub const MAX_CLOCK_SKEW_MS: i64 = 60_000;

/// Tags and checks snapshot messages and watch credentials.
#[derive(Debug, Clone)]
pub struct ChannelAuth {
    messages: MessageKey,
    credentials: MessageKey,
}

impl ChannelAuth {
    /// Keys derived from the shared data-plane key.
    pub fn new(data_plane_key: &SealingKey) -> Result<Self, ProtoError> {
        let derive = |purpose| {
            data_plane_key
                .derive(purpose)
                .and_then(|key| MessageKey::new(&key))
                .map_err(|_| ProtoError::Unauthentic("key derivation"))
        };
        Ok(Self {
            messages: derive(Purpose::SnapshotAuthentication)?,
            credentials: derive(Purpose::WatchCredential)?,
        })
    }

    /// Stamps `message` as sent at `sent_at_ms` and tags it.
    pub fn sign(&self, message: &mut SnapshotMessage, sent_at_ms: i64) {
        message.sent_at_ms = sent_at_ms;
        message.mac.clear();
        message.mac = self.messages.tag(&message.encode_to_vec()).to_vec();
    }

    /// Checks `message`'s tag (the message is left as received).
    pub fn verify(&self, message: &mut SnapshotMessage) -> Result<(), ProtoError> {
        let mac = std::mem::take(&mut message.mac);
        let checked = self
            .messages
            .verify_parts(&[&message.encode_to_vec()], &mac)
            .map_err(|_| ProtoError::Unauthentic("snapshot message"));
        message.mac = mac;
        checked
    }

    /// The credential `node_id` presents at `now_ms`: `v1.<node>.<ms>.<hex tag>`.
    pub fn credential(&self, node_id: &str, now_ms: i64) -> String {
        let tag =
            self.credentials
                .tag_parts(&[node_id.as_bytes(), b"\n", now_ms.to_string().as_bytes()]);
        format!("v1.{node_id}.{now_ms}.{}", hex::encode(tag))
    }

    /// Checks a presented credential at `now_ms`; returns the node id it was issued to.
    pub fn check_credential<'a>(
        &self,
        presented: &'a str,
        now_ms: i64,
    ) -> Result<&'a str, ProtoError> {
        let refused = ProtoError::Unauthentic("watch credential");
        let rest = presented.strip_prefix("v1.").ok_or(refused.clone())?;
        let (rest, tag) = rest.rsplit_once('.').ok_or(refused.clone())?;
        let (node_id, time) = rest.rsplit_once('.').ok_or(refused.clone())?;
        let issued: i64 = time.parse().map_err(|_| refused.clone())?;
        let tag = hex::decode(tag).map_err(|_| refused.clone())?;
        self.credentials
            .verify_parts(&[node_id.as_bytes(), b"\n", time.as_bytes()], &tag)
            .map_err(|_| refused.clone())?;
        if (now_ms - issued).abs() > MAX_CLOCK_SKEW_MS {
            return Err(ProtoError::Unauthentic("watch credential (expired)"));
        }
        Ok(node_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::snapshot_message::Body;
    use crate::v1::{Credential, Full, TenantGuardrails, VirtualKey};

    fn full() -> SnapshotMessage {
        SnapshotMessage {
            version: 7,
            body: Some(Body::Full(Full {
                keys: vec![VirtualKey {
                    key_hash: vec![1; 32],
                    key_id: "key_1".into(),
                    tenant_id: "t".into(),
                    ..VirtualKey::default()
                }],
                credentials: vec![Credential {
                    id: "cred_1".into(),
                    tenant_id: "t".into(),
                    provider: "openai".into(),
                    base_url: "https://api.openai.com/v1".into(),
                    sealed_api_key: vec![9; 40],
                }],
                policy_version: "p1".into(),
                guardrails: vec![TenantGuardrails {
                    tenant_id: "t".into(),
                    config_json: "{}".into(),
                }],
                ..Full::default()
            })),
            sent_at_ms: 0,
            mac: Vec::new(),
        }
    }

    fn with_full(message: &mut SnapshotMessage, change: impl FnOnce(&mut Full)) {
        if let Some(Body::Full(full)) = &mut message.body {
            change(full);
        }
    }

    #[test]
    fn any_change_in_transit_is_refused() {
        let auth = ChannelAuth::new(&SealingKey::generate().unwrap()).unwrap();
        let mut signed = full();
        auth.sign(&mut signed, 1_000);
        let mut received = signed.clone();
        assert_eq!(auth.verify(&mut received), Ok(()));
        assert_eq!(received, signed, "verifying leaves the message as received");

        type Tamper = Box<dyn Fn(&mut SnapshotMessage)>;
        let tamperings: Vec<(&str, Tamper)> = vec![
            (
                "policy version cleared",
                Box::new(|m| with_full(m, |f| f.policy_version.clear())),
            ),
            (
                "guardrails dropped",
                Box::new(|m| with_full(m, |f| f.guardrails.clear())),
            ),
            (
                "key restored",
                Box::new(|m| with_full(m, |f| f.keys.push(f.keys[0].clone()))),
            ),
            (
                "base URL rewritten",
                Box::new(|m| {
                    with_full(m, |f| {
                        f.credentials[0].base_url = "https://evil.example/v1".into()
                    })
                }),
            ),
            ("version moved", Box::new(|m| m.version += 1)),
            ("stamp moved", Box::new(|m| m.sent_at_ms += 1)),
            ("tag cut", Box::new(|m| m.mac.truncate(16))),
        ];
        for (what, tamper) in tamperings {
            let mut message = signed.clone();
            tamper(&mut message);
            assert_eq!(
                auth.verify(&mut message),
                Err(ProtoError::Unauthentic("snapshot message")),
                "{what}"
            );
        }
        let rogue = ChannelAuth::new(&SealingKey::generate().unwrap()).unwrap();
        let mut forged = full();
        rogue.sign(&mut forged, 1_000);
        assert!(auth.verify(&mut forged).is_err(), "another key's message");
    }

    #[test]
    fn credentials_name_their_node_and_expire() {
        let auth = ChannelAuth::new(&SealingKey::generate().unwrap()).unwrap();
        let credential = auth.credential("dp-1.example:a@b", 50_000);
        assert_eq!(
            auth.check_credential(&credential, 60_000),
            Ok("dp-1.example:a@b")
        );
        assert!(
            auth.check_credential(&credential, 50_000 + MAX_CLOCK_SKEW_MS + 1)
                .is_err()
        );
        let renamed = credential.replacen("dp-1", "dp-2", 1);
        assert!(auth.check_credential(&renamed, 60_000).is_err());
        for garbage in ["", "v1.", "v1.a.b.c", "v2.dp.1.00", "v1.dp.x.00"] {
            assert!(
                auth.check_credential(garbage, 60_000).is_err(),
                "{garbage:?}"
            );
        }
        let rogue = ChannelAuth::new(&SealingKey::generate().unwrap()).unwrap();
        assert!(
            auth.check_credential(&rogue.credential("dp", 60_000), 60_000)
                .is_err()
        );
    }
}
