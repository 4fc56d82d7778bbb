//! The snapshot channel under attack, over real gRPC: a man in the middle between a real
//! control plane and a real data plane (forwarding the data plane's own credential) alters the
//! messages, replays them, or a rogue control plane serves its own. The data plane refuses each
//! message, stays on its last good state, ages toward `max_staleness` and then fails closed,
//! and `/readyz` says why.
#![expect(clippy::unwrap_used, clippy::indexing_slicing)]

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use routero_authz::Pdp;
use routero_crypto::SealingKey;
use routero_data_plane::DataPlaneConfig;
use routero_proto::v1::snapshot_message::Body;
use routero_proto::v1::snapshot_service_client::SnapshotServiceClient;
use routero_proto::v1::snapshot_service_server::{SnapshotService, SnapshotServiceServer};
use routero_proto::v1::{AppliedAck, AppliedReport, SnapshotMessage, WatchRequest};
use routero_proto::{CREDENTIAL_METADATA, ChannelAuth};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

#[expect(
    dead_code,
    reason = "uses the harness's control plane, not its whole gateway"
)]
mod common;

use common::{admin, control_plane, eventually, send};

/// What the man in the middle does to the messages it forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attack {
    /// Nothing: the path works.
    None,
    /// Clears the policy version (so no policy would be asked).
    ClearPolicyVersion,
    /// Drops every tenant's guardrails.
    DropGuardrails,
    /// Points every credential at the attacker.
    RewriteBaseUrl,
    /// Keeps revoked keys: drops key removals from deltas, and replays the first full snapshot
    /// (which still has them) in place of later ones.
    RestoreRevokedKeys,
    /// Sends the first message again instead of anything later.
    Replay,
}

struct Mitm {
    upstream: String,
    attack: Attack,
    /// A rogue control plane's key: the man in the middle is that control plane's operator,
    /// so it presents a credential that plane accepts (a real rogue would not ask for one).
    rogue_key: Option<SealingKey>,
    /// The first full snapshot it saw, kept across the data plane's reconnections.
    first: std::sync::Arc<std::sync::Mutex<Option<SnapshotMessage>>>,
}

type Messages = Pin<Box<dyn Stream<Item = Result<SnapshotMessage, Status>> + Send>>;

impl Mitm {
    /// The call forwarded upstream with the caller's credential (what a man in the middle
    /// sees), or the rogue's own.
    fn forwarded<T>(&self, request: Request<T>, node: &str) -> Request<T> {
        let credential = match &self.rogue_key {
            Some(key) => ChannelAuth::new(key)
                .unwrap()
                .credential(node, routero_core::unix_now_ms())
                .parse()
                .ok(),
            None => request.metadata().get(CREDENTIAL_METADATA).cloned(),
        };
        let mut out = Request::new(request.into_inner());
        if let Some(credential) = credential {
            out.metadata_mut().insert(CREDENTIAL_METADATA, credential);
        }
        out
    }
}

fn tamper(attack: Attack, message: &mut SnapshotMessage) {
    match (&mut message.body, attack) {
        (Some(Body::Full(full)), Attack::ClearPolicyVersion) => full.policy_version.clear(),
        (Some(Body::Delta(delta)), Attack::ClearPolicyVersion) => {
            delta.policy_version = Some(String::new());
        }
        (Some(Body::Full(full)), Attack::DropGuardrails) => full.guardrails.clear(),
        (Some(Body::Delta(delta)), Attack::DropGuardrails) => delta.upsert_guardrails.clear(),
        (Some(Body::Full(full)), Attack::RewriteBaseUrl) => {
            for credential in &mut full.credentials {
                credential.base_url = "http://attacker.example/v1".into();
            }
        }
        (Some(Body::Delta(delta)), Attack::RewriteBaseUrl) => {
            for credential in &mut delta.upsert_credentials {
                credential.base_url = "http://attacker.example/v1".into();
            }
        }
        (Some(Body::Delta(delta)), Attack::RestoreRevokedKeys) => {
            delta.removed_key_hashes.clear();
        }
        _ => {}
    }
}

#[tonic::async_trait]
impl SnapshotService for Mitm {
    type WatchStream = Messages;

    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<Messages>, Status> {
        let mut upstream = SnapshotServiceClient::connect(self.upstream.clone())
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let node = request.get_ref().node_id.clone();
        let mut stream = upstream
            .watch(self.forwarded(request, &node))
            .await?
            .into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let (attack, first) = (self.attack, std::sync::Arc::clone(&self.first));
        tokio::spawn(async move {
            while let Ok(Some(mut message)) = stream.message().await {
                let full = matches!(message.body, Some(Body::Full(_)));
                if attack == Attack::Replay || (attack == Attack::RestoreRevokedKeys && full) {
                    let mut first = first.lock().unwrap();
                    message = first.get_or_insert(message).clone();
                }
                tamper(attack, &mut message);
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn report_applied(
        &self,
        request: Request<AppliedReport>,
    ) -> Result<Response<AppliedAck>, Status> {
        let mut upstream = SnapshotServiceClient::connect(self.upstream.clone())
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let node = request.get_ref().node_id.clone();
        upstream
            .report_applied(self.forwarded(request, &node))
            .await
    }
}

struct Setup {
    admin: String,
    data: String,
    key: String,
    _dirs: Vec<tempfile::TempDir>,
    _pdp: Option<Pdp>,
}

/// A control plane; with `policies`, deciding by the repository's Cerbos policies (so its
/// snapshots carry a policy version), the PDP kept alive by the returned handle.
async fn setup(attack: Attack, rogue: bool) -> Setup {
    let data_plane_key = SealingKey::generate().unwrap();
    let policies = attack == Attack::ClearPolicyVersion;
    let (admin_url, grpc, cp_dir, pdp) = control_plane(data_plane_key.clone(), policies).await;
    admin(&admin_url, "/credentials", json!({"name": "p", "provider": "openai", "api_key": "sk-up", "base_url": "http://127.0.0.1:1/v1"})).await;
    admin(
        &admin_url,
        "/models",
        json!({"name": "gpt", "deployments": [{"credential": "p", "model": "up"}]}),
    )
    .await;
    let issued = admin(&admin_url, "/key/generate", json!({"models": ["gpt"]})).await;
    send(
        reqwest::Method::PUT,
        &admin_url,
        "/guardrails",
        json!({"rules": [{"category": "pii", "action": "block"}]}),
    )
    .await;

    let mut dirs = vec![cp_dir];
    let (upstream, rogue_key) = if rogue {
        let rogue_key = SealingKey::generate().unwrap();
        let (_, rogue_grpc, rogue_dir, _) = control_plane(rogue_key.clone(), false).await;
        dirs.push(rogue_dir);
        (rogue_grpc, Some(rogue_key))
    } else {
        (grpc, None)
    };
    let mitm = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mitm_url = format!("http://{}", mitm.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(SnapshotServiceServer::new(Mitm {
                upstream,
                attack,
                rogue_key,
                first: std::sync::Arc::default(),
            }))
            .serve_with_incoming(TcpListenerStream::new(mitm)),
    );

    let mut config = DataPlaneConfig::new(mitm_url, data_plane_key);
    config.max_staleness = Duration::from_secs(2);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let data = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(routero_data_plane::run(
        config,
        listener,
        None,
        std::future::pending(),
    ));
    Setup {
        admin: admin_url,
        data,
        key: issued["key"].as_str().unwrap().to_owned(),
        _dirs: dirs,
        _pdp: pdp,
    }
}

async fn ready(setup: &Setup) -> (u16, String) {
    let response = reqwest::get(format!("{}/readyz", setup.data))
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = String::from_utf8_lossy(&response.bytes().await.unwrap()).into_owned();
    (status, body)
}

async fn models(setup: &Setup) -> u16 {
    reqwest::Client::new()
        .get(format!("{}/v1/models", setup.data))
        .bearer_auth(&setup.key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Polls `check` for up to `seconds`.
#[tokio::test]
async fn an_untouched_path_serves() {
    let setup = setup(Attack::None, false).await;
    assert!(eventually(10, async || ready(&setup).await.0 == 200).await);
    assert_eq!(models(&setup).await, 200);
    // And stays ready on authenticated heartbeats past the staleness bound.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ready(&setup).await.0, 200);
}

#[tokio::test]
async fn an_altered_snapshot_is_never_applied() {
    for attack in [
        Attack::ClearPolicyVersion,
        Attack::DropGuardrails,
        Attack::RewriteBaseUrl,
    ] {
        let setup = setup(attack, false).await;
        assert!(
            eventually(5, async || ready(&setup)
                .await
                .1
                .contains("did not authenticate"))
            .await,
            "{attack:?}: {:?}",
            ready(&setup).await
        );
        let (status, _) = ready(&setup).await;
        assert_eq!(status, 503, "{attack:?}");
        assert_eq!(
            models(&setup).await,
            503,
            "{attack:?}: nothing altered is served"
        );
    }
}

#[tokio::test]
async fn a_rogue_control_plane_is_refused() {
    let setup = setup(Attack::None, true).await;
    assert!(
        eventually(5, async || ready(&setup)
            .await
            .1
            .contains("did not authenticate"))
        .await
    );
    assert_eq!(models(&setup).await, 503);
}

#[tokio::test]
async fn a_revoked_key_is_not_restored_and_a_stale_plane_fails_closed() {
    let setup = setup(Attack::RestoreRevokedKeys, false).await;
    assert!(eventually(10, async || ready(&setup).await.0 == 200).await);
    assert_eq!(models(&setup).await, 200);
    admin(&setup.admin, "/key/delete", json!({"keys": [setup.key]})).await;
    // The altered revocation is refused: the plane keeps its last good state only until
    // max_staleness, then refuses everything rather than serve a revoked key.
    assert!(
        eventually(10, async || models(&setup).await == 503).await,
        "the revoked key kept working"
    );
    let (status, body) = ready(&setup).await;
    assert_eq!(status, 503);
    assert!(
        body.contains("did not authenticate") || body.contains("replayed"),
        "{body}"
    );
}

#[tokio::test]
async fn replayed_messages_do_not_keep_a_plane_fresh() {
    let setup = setup(Attack::Replay, false).await;
    // The first full snapshot applies; its replays are refused, so freshness ends.
    let _ = eventually(5, async || ready(&setup).await.0 == 200).await;
    assert!(
        eventually(10, async || {
            let (status, body) = ready(&setup).await;
            status == 503 && body.contains("replayed")
        })
        .await,
        "{:?}",
        ready(&setup).await
    );
    assert_eq!(models(&setup).await, 503);
}
