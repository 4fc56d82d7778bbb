//! The webhook sink against a real HTTP receiver on loopback that checks signatures with its
//! own HMAC and fails on demand.
#![expect(clippy::unwrap_used, clippy::indexing_slicing)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use routero_audit::AuditStore;
use routero_audit_writer::{SIGNATURE_HEADER, SinkConfig, WebhookConfig, run_webhook};
use routero_bus::{actor, event, resource};
use routero_core::audit::{ActorKind, EventType, Outcome};
use serde_json::Value;
use sha2::Sha256;

const SECRET: &str = "whsec-test-0123456789";

#[derive(Default)]
struct Receiver {
    /// Requests to refuse with 500 before accepting.
    fail_next: Mutex<u32>,
    attempts: Mutex<u32>,
    /// Sequence numbers received, in arrival order.
    received: Mutex<Vec<u64>>,
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    *receiver.attempts.lock().unwrap() += 1;
    let header = headers.get(SIGNATURE_HEADER).unwrap().to_str().unwrap();
    let (t, v1) = header.split_once(',').unwrap();
    let (t, v1) = (
        t.strip_prefix("t=").unwrap(),
        v1.strip_prefix("v1=").unwrap(),
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&body);
    if mac.verify_slice(&hex::decode(v1).unwrap()).is_err() {
        return StatusCode::UNAUTHORIZED;
    }
    {
        let mut fail = receiver.fail_next.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
    }
    let payload: Value = serde_json::from_slice(&body).unwrap();
    let mut received = receiver.received.lock().unwrap();
    received.extend(
        payload["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["seq"].as_u64().unwrap()),
    );
    StatusCode::NO_CONTENT
}

async fn receiver() -> (Arc<Receiver>, String) {
    let receiver = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(Arc::clone(&receiver));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (receiver, url)
}

async fn store_with(dir: &tempfile::TempDir, n: u64) -> AuditStore {
    let store = AuditStore::connect(&routero_testkit::databases::sqlite_in(dir.path()))
        .await
        .unwrap();
    let events: Vec<_> = (0..n)
        .map(|i| {
            event(
                "t",
                EventType::KeyCreated,
                actor(ActorKind::System, None),
                resource("key", Some(format!("k{i}"))),
                Outcome::Success,
            )
        })
        .collect();
    store.append(&events).await.unwrap();
    store
}

fn config(url: String) -> WebhookConfig {
    let mut config = WebhookConfig::new(url, SECRET.to_owned().into());
    config.delivery = SinkConfig {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        batch: 3,
        poll_interval: Duration::from_millis(20),
        max_attempts: 4,
        ..config.delivery
    };
    config
}

/// Runs the sink for `ms` milliseconds.
async fn run_for(store: &AuditStore, config: WebhookConfig, ms: u64) {
    run_webhook(
        store.clone(),
        config,
        tokio::time::sleep(Duration::from_millis(ms)),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn records_arrive_once_in_order_through_failures_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(&dir, 7).await;
    let (receiver, url) = receiver().await;
    *receiver.fail_next.lock().unwrap() = 2;
    run_for(&store, config(url.clone()), 600).await;
    assert_eq!(
        *receiver.received.lock().unwrap(),
        (1..=7).collect::<Vec<_>>()
    );
    assert!(
        *receiver.attempts.lock().unwrap() >= 2 + 3,
        "two refusals retried"
    );
    assert_eq!(store.export_cursor("webhook", "t").await.unwrap(), 7);

    // A restarted sink resumes from its cursor: nothing is sent twice, new records follow.
    store
        .append(&[event(
            "t",
            EventType::KeyRevoked,
            actor(ActorKind::System, None),
            resource("key", None),
            Outcome::Success,
        )])
        .await
        .unwrap();
    run_for(&store, config(url), 300).await;
    assert_eq!(
        *receiver.received.lock().unwrap(),
        (1..=8).collect::<Vec<_>>()
    );
    assert!(store.dead_letters("webhook", "t").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_batch_is_dead_lettered_after_its_attempts_and_delivery_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(&dir, 5).await;
    let (receiver, url) = receiver().await;
    *receiver.fail_next.lock().unwrap() = 4; // exactly the first batch's attempts
    run_for(&store, config(url.clone()), 800).await;
    assert_eq!(
        store.dead_letters("webhook", "t").await.unwrap(),
        vec![(1, 4), (2, 4), (3, 4)]
    );
    assert_eq!(*receiver.received.lock().unwrap(), vec![4, 5]);
    assert_eq!(store.export_cursor("webhook", "t").await.unwrap(), 5);

    // A receiver with another secret refuses every signature: deliveries are attempted, and
    // nothing is accepted.
    let attempts = *receiver.attempts.lock().unwrap();
    let mut wrong = config(url);
    wrong.delivery.name = "other".into();
    wrong.secret = "not-the-secret".to_owned().into();
    run_for(&store, wrong, 400).await;
    assert!(
        *receiver.attempts.lock().unwrap() > attempts,
        "the sink with the wrong secret sent nothing"
    );
    assert_eq!(*receiver.received.lock().unwrap(), vec![4, 5]);
}
