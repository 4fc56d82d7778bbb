//! The audit export sinks a writer runs beside it: the SIEM webhook and the S3 objects, each
//! when configured, and whatever else the caller adds (the SIEM topic).

use std::future::Future;

use anyhow::Result;
use routero_audit::{AuditError, AuditStore};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::settings::Settings;

/// Running sinks; they stop when the watched flag changes.
pub struct Sinks {
    stop: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<Result<(), AuditError>>>,
}

impl Sinks {
    /// Starts the configured sinks on `store`.
    pub fn start(
        settings: &Settings,
        store: &AuditStore,
        stop: &watch::Receiver<bool>,
    ) -> Result<Self> {
        let mut sinks = Self {
            stop: stop.clone(),
            tasks: Vec::new(),
        };
        if let Some(config) = settings.audit_webhook()? {
            let shutdown = sinks.shutdown();
            sinks.spawn(routero_audit_writer::run_webhook(
                store.clone(),
                config,
                shutdown,
            ));
        }
        if let Some(config) = settings.audit_s3()? {
            let shutdown = sinks.shutdown();
            sinks.spawn(routero_audit_writer::run_s3(
                store.clone(),
                config,
                shutdown,
            ));
        }
        Ok(sinks)
    }

    /// Completes when the sinks are told to stop.
    pub fn shutdown(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stop = self.stop.clone();
        async move {
            let _ = stop.changed().await;
        }
    }

    /// Runs one more sink beside the others.
    pub fn spawn(&mut self, sink: impl Future<Output = Result<(), AuditError>> + Send + 'static) {
        self.tasks.push(tokio::spawn(sink));
    }

    /// Waits for every sink to stop.
    pub async fn join(self) -> Result<()> {
        for task in self.tasks {
            task.await??;
        }
        Ok(())
    }
}
