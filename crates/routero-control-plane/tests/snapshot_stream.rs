//! The gRPC snapshot service through its public interface: a full snapshot on connect, then
//! versioned deltas as the admin API changes things; secrets sealed on the wire.
#![expect(clippy::unwrap_used)]

use std::time::Duration;

use routero_control_plane::{ControlPlane, ControlPlaneConfig, KeyringSource, Listeners};
use routero_crypto::{CredentialBinding, Keyring, SealingKey};
use routero_proto::v1::snapshot_message::Body;
use routero_proto::v1::snapshot_service_client::SnapshotServiceClient;
use routero_proto::v1::{AppliedReport, SnapshotMessage, WatchRequest};
use routero_proto::{CREDENTIAL_METADATA, ChannelAuth, WireState, aad};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const ADMIN: &str = "sk-rtadm-test-0123456789abcdef0123456789abcdef";
const PROVIDER_SECRET: &str = "sk-provider-plaintext-must-not-travel";

struct Running {
    admin: String,
    grpc: String,
    data_plane_key: SealingKey,
    _dir: tempfile::TempDir,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let data_plane_key = SealingKey::generate().unwrap();
    let mut config = ControlPlaneConfig::new(
        format!("sqlite://{}", dir.path().join("cp.db").display()),
        SealingKey::generate().unwrap(),
        KeyringSource::Fixed(Keyring::generate().unwrap()),
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
        _dir: dir,
    }
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

    let report = AppliedReport {
        node_id: "test-node".into(),
        version: removal.version,
    };
    let unauthenticated = client.report_applied(report.clone()).await.unwrap_err();
    assert_eq!(unauthenticated.code(), tonic::Code::Unauthenticated);
    client
        .report_applied(credentialed(&cp.data_plane_key, "test-node", report))
        .await
        .unwrap();
    let applied: Value = serde_json::from_slice(
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
    .unwrap();
    assert_eq!(applied["data_planes"][0]["node_id"], "test-node");
    assert_eq!(applied["data_planes"][0]["version"], removal.version);
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
