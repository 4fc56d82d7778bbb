//! The snapshot client: watches the control plane, authenticates and applies what arrives,
//! keeps the last good state (also on disk), and reconnects with backoff.
//!
//! Only applied state counts as contact: a message that does not authenticate, carries an old
//! or far-off stamp, or cannot be applied (a version regression, a secret that does not
//! unseal) is refused, the data plane keeps its last good state, and ages toward `max_staleness`,
//! with the reason on `/readyz`.

use std::sync::Arc;
use std::time::Duration;

use routero_proto::v1::snapshot_service_client::SnapshotServiceClient;
use routero_proto::v1::{AppliedReport, BreakerReport, SnapshotMessage, WatchRequest};
use routero_proto::{
    Applied, CREDENTIAL_METADATA, ChannelAuth, MAX_CLOCK_SKEW_MS, MAX_REPORTED_BREAKERS, WireState,
};
use tokio::sync::watch;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::breaker::Breakers;
use crate::live::{Live, SnapshotCell};
use crate::{DataPlaneConfig, DataPlaneError, persist};

const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often heartbeats refresh the contact time kept on disk.
const PERSIST_CONTACT_EVERY_MS: i64 = 30_000;
/// How often heartbeats bring a report of the applied version and breakers.
const REPORT_EVERY_MS: i64 = 10_000;

/// Follows the control plane until `stop` fires.
pub struct Follower {
    snapshots: Arc<SnapshotCell>,
    config: DataPlaneConfig,
    auth: ChannelAuth,
    state: WireState,
    persisted_contact_ms: i64,
    /// The stamp of the last message accepted: later ones must be newer.
    last_stamp_ms: i64,
    /// This replica's circuit breakers, reported with the applied version.
    breakers: Arc<Breakers>,
    /// When the version held was applied, and when it was last reported.
    applied_at_ms: i64,
    reported_ms: i64,
}

impl Follower {
    /// A follower that first loads the persisted snapshot, if any, into `snapshots`.
    pub(crate) fn new(
        snapshots: Arc<SnapshotCell>,
        breakers: Arc<Breakers>,
        config: DataPlaneConfig,
    ) -> Result<Self, DataPlaneError> {
        let auth = ChannelAuth::new(&config.data_plane_key)?;
        let mut follower = Self {
            snapshots,
            config,
            auth,
            state: WireState::default(),
            persisted_contact_ms: 0,
            last_stamp_ms: 0,
            breakers,
            applied_at_ms: 0,
            reported_ms: 0,
        };
        follower.load_persisted();
        Ok(follower)
    }

    fn load_persisted(&mut self) {
        let Some(path) = &self.config.snapshot_path else {
            return;
        };
        match persist::load(path, &self.config.data_plane_key) {
            Ok(Some((state, contact))) => {
                match Live::build(&state, &self.config.data_plane_key, &self.config.egress) {
                    Ok(live) => {
                        tracing::info!(
                            version = state.version(),
                            "serving from the persisted snapshot"
                        );
                        self.snapshots.store(live);
                        self.snapshots.touch(contact);
                        self.persisted_contact_ms = contact;
                        self.state = state;
                    }
                    Err(error) => tracing::warn!(%error, "persisted snapshot unusable; ignored"),
                }
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "persisted snapshot unreadable; ignored"),
        }
    }

    /// Runs until `stop` fires: connect, stream, and on failure wait and reconnect.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let result = tokio::select! {
                result = self.stream_once(&mut backoff) => result,
                _ = stop.changed() => return,
            };
            if let Err(error) = result {
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "snapshot stream down");
                self.snapshots.refused(error.to_string());
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn connect(&self) -> Result<SnapshotServiceClient<Channel>, DataPlaneError> {
        let mut endpoint = Endpoint::from_shared(self.config.control_plane_url.clone())?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        if let Some(tls) = &self.config.control_plane_tls {
            let mut config = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&tls.ca_pem))
                .domain_name(tls.domain.clone());
            if let Some((cert, key)) = &tls.client_identity {
                config = config.identity(Identity::from_pem(
                    cert,
                    secrecy::ExposeSecret::expose_secret(key),
                ));
            }
            endpoint = endpoint.tls_config(config)?;
        }
        let channel = endpoint.connect().await?;
        Ok(SnapshotServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// A request carrying this node's watch credential.
    fn credentialed<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let credential = self
            .auth
            .credential(&self.config.node_id, routero_core::unix_now_ms());
        if let Ok(value) = credential.parse() {
            request.metadata_mut().insert(CREDENTIAL_METADATA, value);
        }
        request
    }

    async fn stream_once(&mut self, backoff: &mut Duration) -> Result<(), DataPlaneError> {
        let mut client = self.connect().await?;
        let watch = self.credentialed(WatchRequest {
            node_id: self.config.node_id.clone(),
        });
        let mut stream = client.watch(watch).await?.into_inner();
        while let Some(message) = stream.message().await? {
            let now = routero_core::unix_now_ms();
            if let Err(error) = self.accept(&client, message, now) {
                tracing::error!(%error, "snapshot message refused; keeping the last good state");
                return Err(error);
            }
            *backoff = MIN_BACKOFF;
        }
        Err(DataPlaneError::Stream(tonic::Status::unavailable(
            "control plane closed the stream",
        )))
    }

    /// Authenticates and applies one message; only then is it contact.
    fn accept(
        &mut self,
        client: &SnapshotServiceClient<Channel>,
        mut message: SnapshotMessage,
        now: i64,
    ) -> Result<(), DataPlaneError> {
        self.auth.verify(&mut message)?;
        let stamp = message.sent_at_ms;
        if stamp <= self.last_stamp_ms || (now - stamp).abs() > MAX_CLOCK_SKEW_MS {
            return Err(DataPlaneError::Stale(format!(
                "a message stamped {stamp} after one stamped {} (now {now}): replayed or from a far-off clock",
                self.last_stamp_ms
            )));
        }
        let version = message.version;
        // Keys alone changed (the usual delta): the serving snapshot updated, not rebuilt.
        let updated = routero_proto::key_changes(&message)
            .zip(self.snapshots.current())
            .filter(|(_, live)| live.snapshot.version == self.state.version())
            .map(|((removed, upserted), live)| live.with_changed_keys(version, removed, upserted));
        let mut next = self.state.clone();
        match next.apply(message)? {
            Applied::NewVersion(version) => {
                let live = match updated {
                    Some(live) => live,
                    None => Live::build(&next, &self.config.data_plane_key, &self.config.egress)?,
                };
                self.snapshots.store(live);
                self.state = next;
                self.persist(now);
                self.applied_at_ms = now;
                self.report(client, now);
                tracing::debug!(version, "snapshot applied");
            }
            Applied::Heartbeat if version != self.state.version() => {
                return Err(DataPlaneError::Stale(format!(
                    "a heartbeat for version {version} while version {} is applied",
                    self.state.version()
                )));
            }
            Applied::Heartbeat => {
                if now - self.persisted_contact_ms >= PERSIST_CONTACT_EVERY_MS {
                    self.persist(now);
                }
                if now - self.reported_ms >= REPORT_EVERY_MS {
                    self.report(client, now);
                }
            }
        }
        self.last_stamp_ms = stamp;
        self.snapshots.touch(now);
        self.snapshots.accepted();
        Ok(())
    }

    fn persist(&mut self, now: i64) {
        let Some(path) = &self.config.snapshot_path else {
            return;
        };
        match persist::save(path, &self.config.data_plane_key, &self.state, now) {
            Ok(()) => self.persisted_contact_ms = now,
            Err(error) => tracing::warn!(%error, "could not persist snapshot"),
        }
    }

    /// Reports the version held, when it was applied and the breakers not closed.
    fn report(&mut self, client: &SnapshotServiceClient<Channel>, now: i64) {
        self.reported_ms = now;
        let mut client = client.clone();
        let breakers = self
            .breakers
            .not_closed(MAX_REPORTED_BREAKERS)
            .into_iter()
            .map(|(credential_id, model, state)| BreakerReport {
                credential_id,
                model,
                state: state.to_owned(),
            })
            .collect();
        let report = self.credentialed(AppliedReport {
            node_id: self.config.node_id.clone(),
            version: self.state.version(),
            applied_at_ms: self.applied_at_ms,
            breakers,
        });
        tokio::spawn(async move {
            if let Err(error) = client.report_applied(report).await {
                tracing::debug!(%error, "applied-version report failed");
            }
        });
    }
}
