//! The webhook SIEM sink: chained records POSTed in order per tenant, signed with
//! HMAC-SHA256, retried with exponential backoff, and dead-lettered after `max_attempts`.
//! Progress is a cursor in the audit database, moved only after a 2xx, so a restart never
//! skips a record (and re-sends at most the batch in flight).

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use routero_audit::{AuditError, AuditStore, ChainedRecord};
use routero_crypto::webhook_signature;
use secrecy::{ExposeSecret, SecretString};

/// Header carrying `t=<unix seconds>,v1=<hex HMAC-SHA256 of "t." ‖ body>`.
pub const SIGNATURE_HEADER: &str = "x-routero-signature";

/// Where and how to deliver.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Name of this sink in cursors and dead letters.
    pub sink: String,
    /// Receiver URL.
    pub url: String,
    /// HMAC key shared with the receiver.
    pub secret: SecretString,
    /// Attempts per batch before it is dead-lettered.
    pub max_attempts: u32,
    /// Wait after the first failure; doubles per attempt up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// Records per request.
    pub batch: u32,
    /// Pause between scans when everything is delivered.
    pub poll_interval: Duration,
    /// Time allowed per request.
    pub timeout: Duration,
}

impl WebhookConfig {
    /// A sink for `url` with defaults: 8 attempts from 500 ms to 60 s, 100 records a request.
    pub fn new(url: String, secret: SecretString) -> Self {
        Self {
            sink: "webhook".into(),
            url,
            secret,
            max_attempts: 8,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            batch: 100,
            poll_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

struct Webhook {
    store: AuditStore,
    config: WebhookConfig,
    client: reqwest::Client,
}

impl Webhook {
    /// One POST; `Err` carries what went wrong, for the dead letter.
    async fn post(&self, tenant_id: &str, records: &[ChainedRecord]) -> Result<(), String> {
        let body =
            serde_json::to_vec(&serde_json::json!({ "tenant_id": tenant_id, "records": records }))
                .map_err(|e| e.to_string())?;
        let timestamp = unix_now();
        let signature = webhook_signature(
            self.config.secret.expose_secret().as_bytes(),
            timestamp,
            &body,
        )
        .map_err(|e| e.to_string())?;
        let response = self
            .client
            .post(&self.config.url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, format!("t={timestamp},v1={signature}"))
            .body(body)
            .send()
            .await
            .map_err(|e| format!("request: {e}"))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("status {}", response.status()))
        }
    }

    /// Delivers one batch with retries; returns false if `stop` fired meanwhile.
    async fn deliver(
        &self,
        tenant_id: &str,
        records: &[ChainedRecord],
        stop: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<bool, AuditError> {
        let Some(last) = records.last().map(|r| r.seq) else {
            return Ok(true);
        };
        let mut backoff = self.config.initial_backoff;
        let mut error = String::new();
        for attempt in 1..=self.config.max_attempts {
            match self.post(tenant_id, records).await {
                Ok(()) => {
                    self.store
                        .advance_export(&self.config.sink, tenant_id, last, None)
                        .await?;
                    return Ok(true);
                }
                Err(e) => error = e,
            }
            tracing::warn!(sink = %self.config.sink, tenant = tenant_id, attempt, %error, "webhook delivery failed");
            if attempt < self.config.max_attempts {
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut *stop => return Ok(false),
                }
                backoff = (backoff * 2).min(self.config.max_backoff);
            }
        }
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        tracing::error!(sink = %self.config.sink, tenant = tenant_id, first = seqs[0], last, %error, "webhook gave up; records dead-lettered");
        self.store
            .advance_export(
                &self.config.sink,
                tenant_id,
                last,
                Some((&seqs, self.config.max_attempts, &error)),
            )
            .await?;
        Ok(true)
    }

    /// Delivers everything pending once; returns whether anything was sent and whether to go on.
    async fn scan(
        &self,
        stop: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<(bool, bool), AuditError> {
        let mut sent = false;
        for tenant in self.store.tenants().await? {
            let cursor = self.store.export_cursor(&self.config.sink, &tenant).await?;
            let records = self
                .store
                .records_after(&tenant, cursor, self.config.batch)
                .await?;
            if records.is_empty() {
                continue;
            }
            sent = true;
            if !self.deliver(&tenant, &records, stop).await? {
                return Ok((sent, false));
            }
        }
        Ok((sent, true))
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
        store,
        config,
        client,
    };
    let mut stop = std::pin::pin!(shutdown);
    loop {
        let (sent, go_on) = match webhook.scan(&mut stop).await {
            Ok(progress) => progress,
            Err(error) => {
                tracing::error!(%error, "webhook sink scan failed; will retry");
                (false, true)
            }
        };
        if !go_on {
            return Ok(());
        }
        if !sent {
            tokio::select! {
                () = tokio::time::sleep(webhook.config.poll_interval) => {}
                () = &mut stop => return Ok(()),
            }
        }
    }
}
