//! Routero processes for the bench: `routero up` instances with a provider, a model `bench`
//! and a key for it, and split data planes following one of them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::measure::{Target, call};
use crate::{Proc, free_port};

pub const ADMIN_KEY: &str = "sk-rtadm-bench-0123456789abcdef0123456789abcdef";
pub const UPSTREAM_KEY: &str = "sk-upstream-bench";

/// A tenant pipeline acting on everything: personal data redacted, secrets and jailbreaks
/// blocked, on requests and answers.
pub fn guardrails() -> Value {
    json!({"rules": [
        {"category": "pii", "action": "redact"},
        {"category": "secret", "action": "block"},
        {"category": "jailbreak", "action": "block"},
    ]})
}

/// Calls the admin API at `base` (POST, or PUT when `path` starts with `PUT `).
pub async fn admin(client: &reqwest::Client, base: &str, path: &str, body: Value) -> Result<Value> {
    let (request, path) = match path.strip_prefix("PUT ") {
        Some(path) => (client.put(format!("{base}{path}")), path),
        None => (client.post(format!("{base}{path}")), path),
    };
    let response = request
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    let status = response.status();
    let value: Value = serde_json::from_slice(&response.bytes().await?)?;
    if !status.is_success() {
        bail!("{path}: {status} {value}");
    }
    Ok(value)
}

pub async fn wait_ready(client: &reqwest::Client, url: &str) -> Result<()> {
    for _ in 0..400 {
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{url} never became ready")
}

/// Waits until `target` serves a chat completion (its snapshot arrived), for up to 10 s.
async fn until_served(client: &reqwest::Client, target: &Target) -> Result<()> {
    for _ in 0..1000 {
        if call(client, target).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    call(client, target).await
}

/// A `routero up` with a provider, a model `bench` and a key for it.
pub struct Up {
    pub process: Proc,
    pub dir: PathBuf,
    pub admin_url: String,
    pub data_url: String,
    pub grpc_port: u16,
    pub key: String,
}

/// What an instance governs beyond authentication: a price, a budget and rate limits every
/// request is counted against (never reached here), and a guardrail pipeline.
#[derive(Clone, Copy, Default)]
pub struct Governs {
    pub budgets: bool,
    pub guardrails: bool,
}

/// Starts `routero up` named `name` with `env`, and configures it through its admin API.
pub async fn start_up(
    client: &reqwest::Client,
    bin_dir: &Path,
    fake_url: &str,
    (name, governs): (&str, Governs),
    env: &[(&str, &str)],
) -> Result<Up> {
    let dir = std::env::temp_dir().join(format!("routero-bench-{}-{name}", std::process::id()));
    let (admin_port, grpc_port, data_port) = (free_port()?, free_port()?, free_port()?);
    let process = Proc(
        Command::new(bin_dir.join("routero"))
            .arg("up")
            .env("ROUTERO_DATA_DIR", &dir)
            .env("ROUTERO_ADMIN_KEY", ADMIN_KEY)
            .env(
                "ROUTERO_CONTROL_PLANE_ADDR",
                format!("127.0.0.1:{admin_port}"),
            )
            .env("ROUTERO_GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
            .env("ROUTERO_DATA_PLANE_ADDR", format!("127.0.0.1:{data_port}"))
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let (admin_url, data_url) = (
        format!("http://127.0.0.1:{admin_port}"),
        format!("http://127.0.0.1:{data_port}"),
    );
    wait_ready(client, &format!("{admin_url}/readyz")).await?;
    wait_ready(client, &format!("{data_url}/readyz")).await?;
    admin(client, &admin_url, "/credentials", json!({"name": "fake", "provider": "openai", "api_key": UPSTREAM_KEY, "base_url": format!("{fake_url}/v1")})).await?;
    // The same fake provider in Anthropic's shape: its requests and answers translated.
    admin(client, &admin_url, "/credentials", json!({"name": "claude", "provider": "anthropic", "api_key": UPSTREAM_KEY, "base_url": fake_url})).await?;
    admin(client, &admin_url, "/models", json!({"name": "bench-claude", "deployments": [{"credential": "claude", "model": "fake-model"}]})).await?;
    let (mut model, mut key) = (
        json!({"name": "bench", "deployments": [{"credential": "fake", "model": "fake-model"}]}),
        json!({"models": ["bench", "bench-claude"]}),
    );
    if governs.budgets {
        let set = |object: &mut Value, field: &str, value: Value| {
            if let Some(map) = object.as_object_mut() {
                map.insert(field.into(), value);
            }
        };
        set(
            &mut model,
            "pricing",
            json!({"input_per_mtok": 0.15, "output_per_mtok": 0.60}),
        );
        set(&mut key, "max_budget", json!(1_000_000));
        set(&mut key, "budget_duration", json!("30d"));
        set(&mut key, "rpm_limit", json!(10_000_000));
        set(&mut key, "tpm_limit", json!(10_000_000));
    }
    if governs.guardrails {
        admin(client, &admin_url, "PUT /guardrails", guardrails()).await?;
    }
    admin(client, &admin_url, "/models", model).await?;
    let key = admin(client, &admin_url, "/key/generate", key).await?["key"]
        .as_str()
        .context("key")?
        .to_owned();
    let up = Up {
        process,
        dir,
        admin_url,
        data_url,
        grpc_port,
        key,
    };
    until_served(client, &up.target("probe")).await?;
    Ok(up)
}

impl Up {
    /// Its data plane, called with its key for the model `bench`.
    pub fn target(&self, name: &'static str) -> Target {
        self.target_of(name, "bench")
    }

    /// Its data plane, called with its key for `model`.
    pub fn target_of(&self, name: &'static str, model: &'static str) -> Target {
        Target {
            name,
            url: self.data_url.clone(),
            key: self.key.clone(),
            model,
            pid: Some(self.process.0.id()),
        }
    }

    /// A split `routero data-plane` following this instance's control plane, with `env`
    /// (without `kafka_brokers`, allowed to run unaudited), named `name` for its target.
    pub async fn data_plane(
        &self,
        client: &reqwest::Client,
        bin_dir: &Path,
        name: &'static str,
        env: &[(&str, &str)],
    ) -> Result<(Proc, Target)> {
        let key = std::fs::read_to_string(self.dir.join("data-plane.key"))?;
        let port = free_port()?;
        let spool = self.dir.join(format!("spool-{port}"));
        let process = Proc(
            Command::new(bin_dir.join("routero"))
                .arg("data-plane")
                .env(
                    "ROUTERO_CONTROL_PLANE_URL",
                    format!("http://127.0.0.1:{}", self.grpc_port),
                )
                .env("ROUTERO_DATA_PLANE_KEY", key.trim())
                .env("ROUTERO_DATA_PLANE_ADDR", format!("127.0.0.1:{port}"))
                .env("ROUTERO_ALLOW_UNAUDITED", "true")
                .env("ROUTERO_AUDIT_SPOOL_DIR", spool)
                // The fake provider is on loopback, which a split data plane refuses unless allowed.
                .env("ROUTERO_EGRESS_ALLOW", "127.0.0.1/32")
                .envs(env.iter().copied())
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        let url = format!("http://127.0.0.1:{port}");
        wait_ready(client, &format!("{url}/readyz")).await?;
        let target = Target {
            name,
            url,
            key: self.key.clone(),
            model: "bench",
            pid: Some(process.0.id()),
        };
        until_served(client, &target).await?;
        Ok((process, target))
    }
}
