//! The webhook SIEM sink: chained records and the checkpoints over them POSTed in order per
//! tenant (`{"tenant_id", "records", "checkpoints"}`), signed with HMAC-SHA256 over the
//! timestamp and body.

use std::future::Future;
use std::time::Duration;

use routero_audit::{AuditError, AuditStore};
use routero_crypto::webhook_signature;
use secrecy::{ExposeSecret, SecretString};

use crate::sink::{Batch, Sink, SinkConfig, run_sink, send};

/// Header carrying `t=<unix seconds>,v1=<hex HMAC-SHA256 of "t." ‖ body>`.
pub const SIGNATURE_HEADER: &str = "x-routero-signature";

/// Where and how to deliver.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Receiver URL.
    pub url: String,
    /// HMAC key shared with the receiver.
    pub secret: SecretString,
    /// Time allowed per request.
    pub timeout: Duration,
    /// Retries, batching and the cursor's name (`webhook`).
    pub delivery: SinkConfig,
}

impl WebhookConfig {
    /// A sink for `url` with the [`SinkConfig`] defaults and a 10 s request timeout.
    pub fn new(url: String, secret: SecretString) -> Self {
        Self {
            url,
            secret,
            timeout: Duration::from_secs(10),
            delivery: SinkConfig::new("webhook"),
        }
    }
}

struct Webhook {
    url: String,
    secret: SecretString,
    client: reqwest::Client,
}

impl Sink for Webhook {
    async fn deliver(&self, batch: Batch<'_>) -> Result<(), String> {
        let body = serde_json::to_vec(&serde_json::json!({
            "tenant_id": batch.tenant_id,
            "records": batch.records,
            "checkpoints": batch.checkpoints,
        }))
        .map_err(|e| e.to_string())?;
        let timestamp = routero_core::unix_now();
        let signature = webhook_signature(self.secret.expose_secret().as_bytes(), timestamp, &body)
            .map_err(|e| e.to_string())?;
        let request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, format!("t={timestamp},v1={signature}"))
            .body(body);
        send(request).await
    }
}

/// Runs the webhook sink until `shutdown` completes.
pub async fn run_webhook(
    store: AuditStore,
    config: WebhookConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AuditError> {
    let client = reqwest::Client::builder()
        .timeout(config.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|_| AuditError::Malformed("webhook client"))?;
    let webhook = Webhook {
        url: config.url,
        secret: config.secret,
        client,
    };
    run_sink(store, webhook, config.delivery, shutdown).await
}
