//! The audit export sinks a writer runs beside it: the SIEM webhook and the S3 objects, each
//! when configured.

use anyhow::Result;
use routero_audit::{AuditError, AuditStore};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::settings::Settings;

/// Running sinks; they stop when the watched flag changes.
pub struct Sinks(Vec<JoinHandle<Result<(), AuditError>>>);

/// Starts the configured sinks on `store`.
pub fn start(
    settings: &Settings,
    store: &AuditStore,
    stop: &watch::Receiver<bool>,
) -> Result<Sinks> {
    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.changed().await;
    };
    let mut tasks = Vec::new();
    if let Some(config) = settings.audit_webhook()? {
        tasks.push(tokio::spawn(routero_audit_writer::run_webhook(
            store.clone(),
            config,
            wait(stop.clone()),
        )));
    }
    if let Some(config) = settings.audit_s3()? {
        tasks.push(tokio::spawn(routero_audit_writer::run_s3(
            store.clone(),
            config,
            wait(stop.clone()),
        )));
    }
    Ok(Sinks(tasks))
}

impl Sinks {
    /// Waits for every sink to stop.
    pub async fn join(self) -> Result<()> {
        for task in self.0 {
            task.await??;
        }
        Ok(())
    }
}
