//! The gRPC snapshot service through its public interface: a full snapshot on connect, then
//! versioned deltas as the admin API changes things; secrets sealed on the wire.
#![expect(clippy::unwrap_used)]

use std::time::Duration;

use routero_control_plane::{ControlPlane, ControlPlaneConfig, KeyringSource, Listeners};
use routero_crypto::{CredentialBinding, Keyring, SealingKey};
use routero_proto::v1::snapshot_message::Body;
use routero_proto::v1::snapshot_service_client::SnapshotServiceClient;
use routero_proto::v1::{AppliedReport, BreakerReport, SnapshotMessage, WatchRequest};
use routero_proto::{CREDENTIAL_METADATA, ChannelAuth, WireState, aad};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const ADMIN: &str = "sk-rtadm-test-0123456789abcdef0123456789abcdef";
const PROVIDER_SECRET: &str = "sk-provider-plaintext-must-not-travel";

struct Running {
    admin: String,
    grpc: String,
    data_plane_key: SealingKey,
    /// What a second control plane on the same database needs: its pepper and keyring.
    secrets: (SealingKey, Keyring),
    dir: std::sync::Arc<tempfile::TempDir>,
}

async fn start() -> Running {
    let secrets = (
        SealingKey::generate().unwrap(),
        Keyring::generate().unwrap(),
    );
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    start_on(dir, secrets, SealingKey::generate().unwrap()).await
}

/// A control plane on the database in `dir`.
async fn start_on(
    dir: std::sync::Arc<tempfile::TempDir>,
    secrets: (SealingKey, Keyring),
    data_plane_key: SealingKey,
) -> Running {
    let mut config = ControlPlaneConfig::new(
        format!("sqlite://{}", dir.path().join("cp.db").display()),
        secrets.0.clone(),
        KeyringSource::Fixed(secrets.1.clone()),
        data_plane_key.clone(),
    );
    config.admin_key = Some(ADMIN.to_owned().into());
    config.heartbeat_interval = Duration::from_millis(200);
    config.egress = routero_core::EgressPolicy::loopback();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = format!("http://{}", http.local_addr().unwrap());
    let grpc_url = format!("http://{}", grpc.local_addr().unwrap());
    let plane = ControlPlane::build(config).await.unwrap();
    assert!(
        plane.generated_admin_key.is_none(),
        "a configured admin key is used, not a generated one"
    );
    tokio::spawn(plane.serve(Listeners { http, grpc }, std::future::pending()));
    Running {
        admin,
        grpc: grpc_url,
        data_plane_key,
        secrets,
        dir,
    }
}

/// A watch stream of `node` on `cp`.
async fn watch(cp: &Running, node: &str) -> tonic::Streaming<SnapshotMessage> {
    SnapshotServiceClient::connect(cp.grpc.clone())
        .await
        .unwrap()
        .watch(credentialed(
            &cp.data_plane_key,
            node,
            WatchRequest {
                node_id: node.into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn post(base: &str, path: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

/// A call carrying `node`'s watch credential under `key`.
fn credentialed<T>(key: &SealingKey, node: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let credential = ChannelAuth::new(key)
        .unwrap()
        .credential(node, routero_core::unix_now_ms());
    request
        .metadata_mut()
        .insert(CREDENTIAL_METADATA, credential.parse().unwrap());
    request
}

async fn next(stream: &mut tonic::Streaming<SnapshotMessage>) -> SnapshotMessage {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if !matches!(message.body, Some(Body::Heartbeat(_))) {
            return message;
        }
    }
}

#[tokio::test]
async fn full_snapshot_then_deltas_with_sealed_secrets() {
    let cp = start().await;
    post(&cp.admin, "/credentials", json!({"name": "p", "provider": "openai", "api_key": PROVIDER_SECRET, "base_url": "http://127.0.0.1:1/v1"})).await;
    post(
        &cp.admin,
        "/models",
        json!({"name": "gpt", "deployments": [{"credential": "p", "model": "up"}]}),
    )
    .await;

    let mut client = SnapshotServiceClient::connect(cp.grpc.clone())
        .await
        .unwrap();
    let mut stream = client
        .watch(credentialed(
            &cp.data_plane_key,
            "test-node",
            WatchRequest {
                node_id: "test-node".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream).await;
    assert!(
        matches!(first.body, Some(Body::Full(_))),
        "first message must be a full snapshot"
    );
    // The catalog created just before may arrive in the full snapshot or in deltas after it.
    let mut state = WireState::default();
    let mut message = first;
    loop {
        let wire = prost::Message::encode_to_vec(&message);
        assert!(
            !wire
                .windows(PROVIDER_SECRET.len())
                .any(|w| w == PROVIDER_SECRET.as_bytes()),
            "plaintext secret on the wire"
        );
        let auth = ChannelAuth::new(&cp.data_plane_key).unwrap();
        auth.verify(&mut message).expect("every message is tagged");
        state.apply(message).unwrap();
        if state.credentials().count() == 1 && state.routes().count() == 1 {
            break;
        }
        message = next(&mut stream).await;
    }
    let credential = state.credentials().next().unwrap();
    let binding = CredentialBinding {
        tenant: &credential.tenant_id,
        credential_id: &credential.id,
        base_url: &credential.base_url,
    };
    let opened = cp
        .data_plane_key
        .open(&aad::credential(&binding), &credential.sealed_api_key)
        .unwrap();
    assert_eq!(opened, PROVIDER_SECRET.as_bytes());
    for other in [
        CredentialBinding {
            tenant: "another-tenant",
            ..binding
        },
        CredentialBinding {
            credential_id: "cred_other",
            ..binding
        },
        CredentialBinding {
            base_url: "http://127.0.0.1:2/v1",
            ..binding
        },
    ] {
        assert!(
            cp.data_plane_key
                .open(&aad::credential(&other), &credential.sealed_api_key)
                .is_err(),
            "{other:?}"
        );
    }
    let before = state.version();

    // A new key arrives as a delta at the next version.
    let issued = post(&cp.admin, "/key/generate", json!({"models": ["gpt"]})).await;
    let delta = next(&mut stream).await;
    assert_eq!(delta.version, before + 1);
    let Some(Body::Delta(d)) = &delta.body else {
        panic!("expected a delta")
    };
    assert_eq!(d.base_version, before);
    assert_eq!(d.upsert_keys.len(), 1);
    assert_eq!(d.upsert_keys[0].key_id, issued["key_id"]);
    assert!(
        d.upsert_credentials.is_empty(),
        "unchanged credentials are not resent"
    );
    state.apply(delta.clone()).unwrap();

    // Revocation removes it in the following delta.
    post(
        &cp.admin,
        "/key/delete",
        json!({"key_ids": [issued["key_id"]]}),
    )
    .await;
    let removal = next(&mut stream).await;
    let Some(Body::Delta(d)) = &removal.body else {
        panic!("expected a delta")
    };
    assert_eq!(d.removed_key_hashes.len(), 1);
    state.apply(removal.clone()).unwrap();
    assert_eq!(state.keys().count(), 0);

    let credential_id = state.credentials().next().unwrap().id.clone();
    let breaker = |credential_id: &str, state: &str| BreakerReport {
        credential_id: credential_id.into(),
        model: "gpt-up".into(),
        state: state.into(),
    };
    let report = AppliedReport {
        node_id: "test-node".into(),
        version: removal.version,
        applied_at_ms: 1_700_000_000_500,
        // One of this tenant's deployments, and one of a credential it does not own.
        breakers: vec![
            breaker(&credential_id, "open"),
            breaker("cred_of_another_tenant", "probing"),
        ],
    };
    let mut garbled = report.clone();
    garbled.breakers = vec![breaker(&credential_id, "<b>closed</b>")];
    let refused = client
        .report_applied(credentialed(&cp.data_plane_key, "test-node", garbled))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let mut flood = report.clone();
    flood.breakers = vec![breaker(&credential_id, "open"); 257];
    let refused = client
        .report_applied(credentialed(&cp.data_plane_key, "test-node", flood))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let data_planes = async || -> Value {
        serde_json::from_slice(
            &reqwest::Client::new()
                .get(format!("{}/data-planes", cp.admin))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        data_planes().await["data_planes"],
        json!([]),
        "refused reports are not kept"
    );
    let unauthenticated = client.report_applied(report.clone()).await.unwrap_err();
    assert_eq!(unauthenticated.code(), tonic::Code::Unauthenticated);
    client
        .report_applied(credentialed(
            &cp.data_plane_key,
            "test-node",
            report.clone(),
        ))
        .await
        .unwrap();
    let applied = data_planes().await;
    assert_eq!(applied["data_planes"][0]["node_id"], "test-node");
    assert_eq!(applied["data_planes"][0]["version"], removal.version);
    assert_eq!(applied["data_planes"][0]["applied_at"], 1_700_000_000);
    assert_eq!(
        applied["data_planes"][0]["breakers"],
        json!([{"credential_id": credential_id, "credential": "p", "model": "gpt-up",
            "state": "open"}]),
        "only the caller's tenant's deployments, by credential name"
    );
    // The next report names none: they closed. A time before 1970 is no time.
    let mut healed = report.clone();
    healed.breakers = Vec::new();
    healed.applied_at_ms = -5;
    client
        .report_applied(credentialed(&cp.data_plane_key, "test-node", healed))
        .await
        .unwrap();
    let applied = data_planes().await;
    assert_eq!(applied["data_planes"][0]["breakers"], json!([]));
    assert_eq!(applied["data_planes"][0]["applied_at"], 0);
}

/// Deltas that change keys alone are built from those keys, not from a reload of everything:
/// what a data plane holds after following them must be what a control plane reading the whole
/// database sends, key for key, through issues, updates, rotations, revocations and changes
/// that are not about keys.
#[tokio::test]
async fn keys_followed_change_by_change_are_what_a_whole_reload_sends() {
    let cp = start().await;
    let mut stream = watch(&cp, "follower").await;
    let auth = ChannelAuth::new(&cp.data_plane_key).unwrap();
    let mut state = WireState::default();
    let mut message = next(&mut stream).await;
    auth.verify(&mut message).unwrap();
    state.apply(message).unwrap();
    // Each change is followed before the next is made, so each is a delta of its own.
    let mut change = async |path: &str, body: Value| {
        let answer = post(&cp.admin, path, body).await;
        let mut message = next(&mut stream).await;
        auth.verify(&mut message).unwrap();
        assert_eq!(message.version, state.version() + 1, "{path}");
        state.apply(message).unwrap();
        answer
    };
    let mut ids = Vec::new();
    for i in 0..6 {
        let issued = change("/key/generate", json!({"metadata": {"i": i}})).await;
        ids.push(issued["key_id"].as_str().unwrap().to_owned());
    }
    change(
        "/key/update",
        json!({"key_id": ids[0], "models": ["a", "b"]}),
    )
    .await;
    change("/key/regenerate", json!({"key_id": ids[1]})).await;
    change("/key/delete", json!({"key_ids": [ids[2], ids[3]]})).await;
    // Not about keys: that snapshot is reloaded whole, and key deltas resume after it.
    change("/users", json!({"user_name": "someone"})).await;
    change("/key/regenerate", json!({"key_id": ids[1]})).await;
    change("/key/update", json!({"key_id": ids[4], "duration": "1h"})).await;
    change("/key/generate", json!({})).await;

    // A second control plane on the same database loads everything once.
    let whole = start_on(
        std::sync::Arc::clone(&cp.dir),
        (cp.secrets.0.clone(), cp.secrets.1.clone()),
        cp.data_plane_key.clone(),
    )
    .await;
    let mut first = next(&mut watch(&whole, "reloader").await).await;
    auth.verify(&mut first).unwrap();
    let mut reloaded = WireState::default();
    reloaded.apply(first).unwrap();
    assert_eq!(reloaded.version(), state.version());
    let followed: Vec<_> = state.keys().collect();
    assert_eq!(followed, reloaded.keys().collect::<Vec<_>>());
    assert_eq!(followed.len(), 5, "6 issued, 2 revoked, 1 more issued");
    assert!(
        followed
            .iter()
            .any(|k| k.key_id == ids[0] && k.models == ["a", "b"])
    );
    assert!(
        followed
            .iter()
            .all(|k| k.key_id != ids[2] && k.key_id != ids[3])
    );
}

#[tokio::test]
async fn heartbeats_flow_and_bad_node_ids_are_refused() {
    let cp = start().await;
    let mut client = SnapshotServiceClient::connect(cp.grpc.clone())
        .await
        .unwrap();
    let refused = client
        .watch(WatchRequest {
            node_id: "bad id with spaces".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let mut stream = client
        .watch(credentialed(
            &cp.data_plane_key,
            "n1",
            WatchRequest {
                node_id: "n1".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let _full = stream.message().await.unwrap().unwrap();
    let beat = tokio::time::timeout(Duration::from_secs(2), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(beat.body, Some(Body::Heartbeat(_))));
}

#[tokio::test]
async fn watching_needs_a_credential_of_the_data_plane_key_for_that_node() {
    let cp = start().await;
    let mut client = SnapshotServiceClient::connect(cp.grpc.clone())
        .await
        .unwrap();
    let watch = || WatchRequest {
        node_id: "n1".into(),
    };
    let refusals = [
        ("none", tonic::Request::new(watch())),
        (
            "another key's",
            credentialed(&SealingKey::generate().unwrap(), "n1", watch()),
        ),
        (
            "another node's",
            credentialed(&cp.data_plane_key, "n2", watch()),
        ),
    ];
    for (what, request) in refusals {
        let refused = client.watch(request).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{what}");
    }
    let mut expired = tonic::Request::new(watch());
    let old = ChannelAuth::new(&cp.data_plane_key)
        .unwrap()
        .credential("n1", routero_core::unix_now_ms() - 10 * 60_000);
    expired
        .metadata_mut()
        .insert(CREDENTIAL_METADATA, old.parse().unwrap());
    assert_eq!(
        client.watch(expired).await.unwrap_err().code(),
        tonic::Code::Unauthenticated,
        "a credential captured ten minutes ago"
    );
}
