//! A whole gateway in one process for the data plane's tests: a real control plane on SQLite
//! (it builds and signs the snapshots), the data plane following it over real gRPC, the
//! testkit's fake provider, and the data plane's audit events collected as they are published.
//! Nothing outside the process: no PostgreSQL, no Python.
#![expect(clippy::unwrap_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use routero_authz::{Pdp, find_cerbos};
use routero_bus::{EventSource as _, Overflow};
use routero_control_plane::{ControlPlane, ControlPlaneConfig, KeyringSource, Listeners};
use routero_core::audit::AuditEvent;
use routero_crypto::{Keyring, SealingKey};
use routero_data_plane::DataPlaneConfig;
use routero_testkit::{FakeConfig, Recorded};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// The control plane's bootstrap admin key.
pub const ADMIN: &str = "sk-rtadm-test-0123456789abcdef0123456789abcdef";
/// The key the fake provider requires of the gateway.
pub const UPSTREAM_KEY: &str = "sk-upstream-fake-0123456789";

/// A control plane on SQLite in a temporary directory, serving admin HTTP and snapshot gRPC
/// on free loopback ports; with `policies`, decisions come from a real Cerbos PDP on the
/// repository's policies. Returns (admin URL, gRPC URL, its directory, the PDP).
pub async fn control_plane(
    data_plane_key: SealingKey,
    policies: bool,
) -> (String, String, tempfile::TempDir, Option<Pdp>) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ControlPlaneConfig::new(
        format!("sqlite://{}", dir.path().join("cp.db").display()),
        SealingKey::generate().unwrap(),
        KeyringSource::Fixed(Keyring::generate().unwrap()),
        data_plane_key,
    );
    config.admin_key = Some(ADMIN.to_owned().into());
    config.heartbeat_interval = Duration::from_millis(100);
    config.poll_interval = Duration::from_millis(100);
    config.egress = routero_core::EgressPolicy::loopback();
    let pdp = if policies {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
        let work = dir.path().join("cerbos");
        std::fs::create_dir_all(&work).unwrap();
        let pdp = Pdp::start(&find_cerbos(None).unwrap(), &root, &work)
            .await
            .unwrap();
        config.policies_dir = Some(root);
        config.authz = Some(pdp.config());
        Some(pdp)
    } else {
        None
    };
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = format!("http://{}", http.local_addr().unwrap());
    let grpc_url = format!("http://{}", grpc.local_addr().unwrap());
    let plane = ControlPlane::build(config).await.unwrap();
    tokio::spawn(plane.serve(Listeners { http, grpc }, std::future::pending()));
    (admin, grpc_url, dir, pdp)
}

/// A JSON request with a bearer token; answers its status and JSON body (`null` when the
/// body is not JSON).
pub async fn request(
    method: reqwest::Method,
    url: String,
    bearer: &str,
    body: String,
) -> (u16, Value) {
    let response = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(bearer)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// An admin API call with the bootstrap key; answers its status and JSON body.
pub async fn call(method: reqwest::Method, base: &str, path: &str, body: Value) -> (u16, Value) {
    request(method, format!("{base}{path}"), ADMIN, body.to_string()).await
}

/// An admin API call that must succeed; answers its JSON body.
pub async fn send(method: reqwest::Method, base: &str, path: &str, body: Value) -> Value {
    let (status, answer) = call(method, base, path, body).await;
    assert!((200..300).contains(&status), "{path}: {status} {answer}");
    answer
}

/// `POST` to the admin API, which must succeed.
pub async fn admin(base: &str, path: &str, body: Value) -> Value {
    send(reqwest::Method::POST, base, path, body).await
}

/// Whether `check` holds within `seconds`, asked every 50 ms.
pub async fn eventually(seconds: u64, mut check: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..seconds * 20 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A gateway in process: control plane, data plane, fake provider, the audit events the data
/// plane published.
pub struct Stack {
    /// The control plane's admin API.
    pub admin: String,
    /// The data plane.
    pub data: String,
    /// The fake provider.
    pub fake: String,
    /// Every audit event the data plane published, in order.
    pub events: Arc<Mutex<Vec<AuditEvent>>>,
    _dir: tempfile::TempDir,
}

impl Stack {
    /// Starts a gateway whose catalogue routes `gpt-a` and `gpt-b` to the fake provider and
    /// `dead` to a port nobody listens on; `tune` adjusts the data plane's configuration.
    pub async fn start(tune: impl FnOnce(&mut DataPlaneConfig)) -> Self {
        let fake = routero_testkit::spawn(FakeConfig {
            api_key: Some(UPSTREAM_KEY.into()),
            ..FakeConfig::default()
        })
        .await
        .unwrap();
        let fake = format!("http://{fake}");
        let data_plane_key = SealingKey::generate().unwrap();
        let (admin_url, grpc, dir, _) = control_plane(data_plane_key.clone(), false).await;
        for (name, base_url) in [
            ("fake", format!("{fake}/v1")),
            ("dead", "http://127.0.0.1:1/v1".into()),
        ] {
            admin(&admin_url, "/credentials", json!({"name": name, "provider": "openai", "api_key": UPSTREAM_KEY, "base_url": base_url})).await;
        }
        for (model, credential) in [("gpt-a", "fake"), ("gpt-b", "fake"), ("dead", "dead")] {
            admin(
                &admin_url,
                "/models",
                json!({"name": model, "deployments": [{"credential": credential, "model": "up"}]}),
            )
            .await;
        }
        let mut config = DataPlaneConfig::new(grpc, data_plane_key);
        config.egress = routero_core::EgressPolicy::loopback();
        tune(&mut config);
        let (bus, mut source) = routero_bus::in_process(1024, Overflow::Block);
        let events = Arc::new(Mutex::new(Vec::new()));
        let collected = Arc::clone(&events);
        tokio::spawn(async move {
            while let Some(batch) = source.next_batch(256).await {
                collected.lock().unwrap().extend(batch);
                source.commit().await.unwrap();
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let data = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(routero_data_plane::run(
            config,
            listener,
            Some(bus),
            std::future::pending(),
        ));
        Self {
            admin: admin_url,
            data,
            fake,
            events,
            _dir: dir,
        }
    }

    /// A new virtual key (`body` as for `/key/generate`), once the data plane knows it.
    pub async fn key(&self, body: Value) -> String {
        let issued = admin(&self.admin, "/key/generate", body).await;
        let key = issued["key"].as_str().unwrap().to_owned();
        let known = eventually(10, async || {
            reqwest::Client::new()
                .get(format!("{}/v1/models", self.data))
                .bearer_auth(&key)
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() != 401)
        })
        .await;
        assert!(known, "the data plane never learned the key");
        key
    }

    /// Sets the tenant's guardrails; answers once a request shows the data plane applies them
    /// (`probe` is a chat body whose reply must satisfy `applied`).
    pub async fn guardrails(
        &self,
        pipeline: Value,
        key: &str,
        probe: Value,
        applied: impl Fn(u16, &Value) -> bool,
    ) {
        send(reqwest::Method::PUT, &self.admin, "/guardrails", pipeline).await;
        let ok = eventually(10, async || {
            let (status, body) = self.chat(key, &probe).await;
            applied(status, &body)
        })
        .await;
        assert!(ok, "the data plane never applied the guardrails");
    }

    /// `POST /v1/chat/completions` with `key` and a JSON body.
    pub async fn chat(&self, key: &str, body: &Value) -> (u16, Value) {
        self.post(key, "/v1/chat/completions", body.to_string())
            .await
    }

    /// `POST` of raw `body` to the data plane with `key`; answers status and JSON body.
    pub async fn post(&self, key: &str, path: &str, body: String) -> (u16, Value) {
        request(
            reqwest::Method::POST,
            format!("{}{path}", self.data),
            key,
            body,
        )
        .await
    }

    /// A streamed chat completion's raw bytes.
    pub async fn stream(&self, key: &str, body: &Value) -> String {
        let mut body = body.clone();
        body["stream"] = json!(true);
        let response = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", self.data))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        String::from_utf8(response.bytes().await.unwrap().to_vec()).unwrap()
    }

    /// Everything the fake provider was sent, oldest first.
    pub async fn provider_saw(&self) -> Vec<Recorded> {
        let bytes = reqwest::get(format!("{}/_fake/requests", self.fake))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let answer: Value = serde_json::from_slice(&bytes).unwrap();
        serde_json::from_value(answer["requests"].clone()).unwrap()
    }

    /// Changes how the fake provider behaves (its key stays required).
    pub async fn fake_config(&self, config: FakeConfig) {
        let config = FakeConfig {
            api_key: Some(UPSTREAM_KEY.into()),
            ..config
        };
        let response = reqwest::Client::new()
            .post(format!("{}/_fake/config", self.fake))
            .header("content-type", "application/json")
            .body(serde_json::to_string(&config).unwrap())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    /// The first audit event published after the first `skip` that satisfies `matches`,
    /// waiting up to five seconds for it.
    pub async fn event(&self, skip: usize, matches: impl Fn(&AuditEvent) -> bool) -> AuditEvent {
        let mut found = None;
        eventually(5, async || {
            found = self
                .events
                .lock()
                .unwrap()
                .iter()
                .skip(skip)
                .find(|e| matches(e))
                .cloned();
            found.is_some()
        })
        .await;
        found.unwrap_or_else(|| panic!("no such event among {:#?}", self.events.lock().unwrap()))
    }

    /// How many audit events were published so far.
    pub fn event_count(&self) -> usize {
        self.events.lock().unwrap().len()
    }
}
