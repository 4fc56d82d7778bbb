//! The snapshot publisher and the gRPC service data planes watch.
//!
//! One task turns store changes into a new [`WireState`] and publishes it on a watch channel.
//! Each stream sends the full state on connect, then the delta from what it last sent to the
//! newest state, and heartbeats while nothing changes.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::Stream;
use routero_crypto::SealingKey;
use routero_proto::v1::snapshot_service_server::SnapshotService;
use routero_proto::v1::{self, snapshot_message::Body};
use routero_proto::{CREDENTIAL_METADATA, ChannelAuth, WireState, aad};
use secrecy::ExposeSecret;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::ControlPlaneError;
use crate::store::{KeyRecord, SealedCredential, StateRows, Store};
use crate::vault::Vault;

/// What a data plane last reported (every tenant's breakers: never answered whole).
#[derive(Debug, Clone)]
pub struct AppliedVersion {
    /// Node identifier the data plane chose.
    pub node_id: String,
    /// Version it applied.
    pub version: u64,
    /// Unix seconds of the report.
    pub reported_at: i64,
    /// Unix seconds when it applied that version (0: it did not say).
    pub applied_at: i64,
    /// Its deployments whose circuit breaker is not closed.
    pub breakers: Vec<Breaker>,
}

/// A deployment's circuit breaker that is not closed in one data plane.
#[derive(Debug, Clone)]
pub struct Breaker {
    /// The credential's id (its tenant's deployments only are ever shown to it).
    pub credential_id: String,
    /// The upstream model.
    pub model: String,
    /// `open` or `probing`.
    pub state: &'static str,
}

/// A report's breakers, checked: at most [`routero_proto::MAX_REPORTED_BREAKERS`], ids and
/// models of bounded length, states `open` or `probing`.
fn breakers_of(reported: Vec<v1::BreakerReport>) -> Result<Vec<Breaker>, Status> {
    if reported.len() > routero_proto::MAX_REPORTED_BREAKERS {
        return Err(Status::invalid_argument(format!(
            "breakers: at most {}",
            routero_proto::MAX_REPORTED_BREAKERS
        )));
    }
    reported
        .into_iter()
        .map(|breaker| {
            let state = match breaker.state.as_str() {
                "open" => "open",
                "probing" => "probing",
                _ => return Err(Status::invalid_argument("breakers: state open or probing")),
            };
            if breaker.credential_id.is_empty()
                || breaker.credential_id.len() > 128
                || breaker.model.is_empty()
                || breaker.model.len() > 256
            {
                return Err(Status::invalid_argument(
                    "breakers: a credential id of 1-128 and a model of 1-256 bytes",
                ));
            }
            Ok(Breaker {
                credential_id: breaker.credential_id,
                model: breaker.model,
                state,
            })
        })
        .collect()
}

/// A published state and, when it follows another directly, the delta from that one: what
/// every stream one version behind sends, computed once.
struct Published {
    state: Arc<WireState>,
    delta: Option<v1::SnapshotMessage>,
}

/// Builds wire states from the store and publishes the newest one.
pub struct Publisher {
    store: Store,
    vault: Vault,
    data_plane_key: SealingKey,
    sealed_pepper: Vec<u8>,
    /// Sealed provider keys by credential id, reused while the row (tenant, base URL, vault
    /// ciphertext) is unchanged, so unchanged credentials produce no delta.
    sealed: Mutex<HashMap<String, (SealedCredential, Vec<u8>)>>,
    latest: watch::Sender<Arc<Published>>,
    /// One refresh at a time, so a slower one never publishes over a newer state.
    refreshing: tokio::sync::Mutex<()>,
    /// When the state was last reloaded whole.
    reloaded_whole: Mutex<Option<Instant>>,
    applied: Mutex<HashMap<String, AppliedVersion>>,
    /// Version of the policy bundle deciding requests ("" when policies are off).
    policy_version: Mutex<String>,
    /// Tags every message sent and checks watch credentials.
    auth: ChannelAuth,
}

impl Publisher {
    /// Builds the first state from the store.
    pub async fn start(
        store: Store,
        vault: Vault,
        data_plane_key: SealingKey,
        pepper: &SealingKey,
    ) -> Result<Arc<Self>, ControlPlaneError> {
        let sealed_pepper = data_plane_key.seal(aad::PEPPER, pepper.to_bytes().expose())?;
        let auth = ChannelAuth::new(&data_plane_key)
            .map_err(|e| ControlPlaneError::Config(format!("data_plane_key: {e}")))?;
        let (latest, _) = watch::channel(Arc::new(Published {
            state: Arc::new(WireState::default()),
            delta: None,
        }));
        let publisher = Arc::new(Self {
            store,
            vault,
            data_plane_key,
            sealed_pepper,
            sealed: Mutex::new(HashMap::new()),
            latest,
            refreshing: tokio::sync::Mutex::new(()),
            reloaded_whole: Mutex::new(None),
            applied: Mutex::new(HashMap::new()),
            policy_version: Mutex::new(String::new()),
            auth,
        });
        publisher.refresh().await?;
        Ok(publisher)
    }

    /// The newest published state.
    pub fn latest(&self) -> Arc<WireState> {
        Arc::clone(&self.latest.borrow().state)
    }

    /// Publishes `version` as the policy bundle's version, in a new snapshot version; returns
    /// the previous one when it changed.
    pub async fn set_policy_version(
        &self,
        version: &str,
    ) -> Result<Option<String>, ControlPlaneError> {
        let previous = {
            let mut current = self
                .policy_version
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *current == version {
                return Ok(None);
            }
            std::mem::replace(&mut *current, version.to_owned())
        };
        if let Err(error) = self.store.bump_snapshot_version().await {
            // Not published: the next attempt must see the change again.
            previous.clone_into(
                &mut self
                    .policy_version
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            return Err(error);
        }
        self.refresh().await?;
        Ok(Some(previous))
    }

    /// Reloads the store and publishes a new state if its version moved: only the keys
    /// changed when nothing else did, the whole state otherwise.
    pub async fn refresh(&self) -> Result<(), ControlPlaneError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let previous = self.latest();
        let since = previous.version();
        let version = self.store.snapshot_version().await?;
        if version == since {
            return Ok(());
        }
        // A whole reload now and then heals any drift the change log could hide (a row altered
        // with the database's credentials, a restored database); also when the version went
        // back, and when the log cannot be read.
        let whole_due = self
            .reloaded_whole
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_none_or(|at| at.elapsed() >= RELOAD_WHOLE_EVERY);
        let changed = if since == 0 || version < since || whole_due {
            None
        } else {
            self.store
                .changed_keys(since)
                .await
                .unwrap_or_else(|error| {
                    tracing::warn!(%error, "snapshot change log unreadable; reloading whole");
                    None
                })
        };
        tracing::debug!(
            from = since,
            keys_changed = changed.as_ref().map(|c| c.ids.len()),
            "snapshot refresh (keys_changed none: reloaded whole)"
        );
        let state = match changed {
            Some(changed) => previous.with_changed_keys(
                changed.version,
                &changed.ids,
                changed.keys.into_iter().map(wire_key),
            ),
            None => {
                let state = self.wire_state(self.store.load_state().await?)?;
                *self
                    .reloaded_whole
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
                state
            }
        };
        if state.version() / PRUNE_EVERY != since / PRUNE_EVERY {
            let forget = state.version().saturating_sub(KEEP_CHANGES);
            if let Err(error) = self.store.prune_snapshot_changes(forget).await {
                tracing::warn!(%error, "could not prune the snapshot change log");
            }
        }
        let delta = previous.delta_to(&state);
        self.latest.send_replace(Arc::new(Published {
            state: Arc::new(state),
            delta,
        }));
        Ok(())
    }

    /// Refreshes on every store change, and at `poll` for changes made by other processes,
    /// until `stop` fires.
    pub async fn follow(self: Arc<Self>, poll: Duration, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = self.store.changed().notified() => {}
                () = tokio::time::sleep(poll) => {}
                _ = stop.changed() => return,
            }
            if let Err(error) = self.refresh().await {
                tracing::warn!(%error, "snapshot refresh failed; keeping the last state");
            }
        }
    }

    fn wire_state(&self, rows: StateRows) -> Result<WireState, ControlPlaneError> {
        let keys = rows.keys.into_iter().map(wire_key);
        let routes = rows.routes.into_iter().map(|r| v1::ModelRoute {
            name: Some(v1::RouteName {
                tenant_id: r.tenant_id,
                name: r.name,
            }),
            deployments: r
                .deployments
                .into_iter()
                .map(|d| v1::Deployment {
                    credential_id: d.credential_id,
                    model: d.model,
                    weight: d.weight,
                })
                .collect(),
            tags: r.tags,
            pricing: r.pricing.as_ref().map(v1::Pricing::from),
            routing: Some(v1::Routing::from(&r.routing)),
        });
        let mut cache = self
            .sealed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut credentials = Vec::with_capacity(rows.credentials.len());
        for row in rows.credentials {
            let id = row.credential.id.clone();
            let sealed = match cache.get(&id) {
                Some((seen, sealed))
                    if seen.binding() == row.binding() && seen.ciphertext == row.ciphertext =>
                {
                    sealed.clone()
                }
                _ => match self.seal_for_wire(&row) {
                    Ok(sealed) => {
                        cache.insert(id.clone(), (row.clone(), sealed.clone()));
                        sealed
                    }
                    Err(error) => {
                        // One unreadable credential must not hold back revocations.
                        tracing::error!(credential = %id, %error, "credential left out of the snapshot");
                        continue;
                    }
                },
            };
            credentials.push(v1::Credential {
                id,
                tenant_id: row.tenant_id,
                provider: row.credential.provider,
                base_url: row.credential.base_url,
                sealed_api_key: sealed,
            });
        }
        let policy_version = self
            .policy_version
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        Ok(WireState::new(
            rows.version,
            self.sealed_pepper.clone(),
            keys,
            routes,
            credentials,
        )
        .with_policy_version(policy_version)
        .with_guardrails(rows.guardrails.into_iter().map(|(tenant_id, config_json)| {
            v1::TenantGuardrails {
                tenant_id,
                config_json,
            }
        }))
        .with_cors(
            rows.cors
                .into_iter()
                .map(|(tenant_id, origins)| v1::TenantCors { tenant_id, origins }),
        )
        .with_allowances(rows.allowances.iter().map(|(tenant_id, scope, allowance)| {
            v1::ScopedAllowance {
                scope: Some(v1::AllowanceScope {
                    tenant_id: tenant_id.clone(),
                    scope: scope.clone(),
                }),
                allowance: Some(allowance.into()),
            }
        })))
    }

    /// The row's provider key sealed for data planes, bound to the same tenant, id and base
    /// URL as in the vault: a row repointed in the database does not decrypt.
    fn seal_for_wire(&self, row: &SealedCredential) -> Result<Vec<u8>, ControlPlaneError> {
        let binding = row.binding();
        let plaintext = self.vault.decrypt(&binding, &row.ciphertext)?;
        Ok(self.data_plane_key.seal(
            &aad::credential(&binding),
            plaintext.expose_secret().as_bytes(),
        )?)
    }

    /// Versions data planes have reported, by node.
    pub fn applied_versions(&self) -> Vec<AppliedVersion> {
        let applied = self
            .applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut list: Vec<_> = applied.values().cloned().collect();
        list.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        list
    }
}

/// How many versions' key changes the store keeps (a data plane or control plane further
/// behind reloads whole), and how often older ones are pruned.
const KEEP_CHANGES: u64 = 10_000;
const PRUNE_EVERY: u64 = 1_000;
/// How often a refresh reloads the whole state even when only keys changed.
const RELOAD_WHOLE_EVERY: Duration = Duration::from_secs(300);

fn wire_key(k: KeyRecord) -> v1::VirtualKey {
    v1::VirtualKey {
        key_hash: k.key_hash,
        key_id: k.id,
        tenant_id: k.tenant_id,
        team_id: k.team_id,
        user_id: k.user_id,
        models: k.models,
        allowed_cidrs: k.allowed_cidrs,
        expires_at: k.expires_at,
        roles: k.roles,
        allowance: Some(v1::Allowance::from(&k.limits)),
    }
}

/// The version a delta message starts from.
fn delta_base(message: &v1::SnapshotMessage) -> Option<u64> {
    match &message.body {
        Some(Body::Delta(delta)) => Some(delta.base_version),
        _ => None,
    }
}

/// The gRPC face of the publisher.
pub struct SnapshotGrpc {
    publisher: Arc<Publisher>,
    heartbeat: Duration,
    stop: watch::Receiver<bool>,
}

impl SnapshotGrpc {
    /// A service streaming from `publisher`; streams end when `stop` fires.
    pub fn new(
        publisher: Arc<Publisher>,
        heartbeat: Duration,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self {
            publisher,
            heartbeat,
            stop,
        }
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<v1::SnapshotMessage, Status>> + Send>>;

impl SnapshotGrpc {
    /// Admits a call of `node_id`: a verified client certificate (mutual TLS), or a watch
    /// credential derived from the data-plane key, issued to that node and recent.
    fn admit<T>(&self, request: &Request<T>, node_id: &str) -> Result<(), Status> {
        if request.peer_certs().is_some_and(|certs| !certs.is_empty()) {
            return Ok(());
        }
        let presented = request
            .metadata()
            .get(CREDENTIAL_METADATA)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| Status::unauthenticated("a watch credential is required"))?;
        match self
            .publisher
            .auth
            .check_credential(presented, routero_core::unix_now_ms())
        {
            Ok(holder) if holder == node_id => Ok(()),
            _ => {
                tracing::warn!(%node_id, "snapshot call with a credential that does not authenticate; refused");
                Err(Status::unauthenticated(
                    "the watch credential does not authenticate",
                ))
            }
        }
    }
}

/// Stamps for one stream's messages: the time, and always later than the one before.
struct Stamps(i64);

impl Stamps {
    fn next(&mut self) -> i64 {
        self.0 = routero_core::unix_now_ms().max(self.0 + 1);
        self.0
    }
}

fn valid_node_id(node_id: &str) -> Result<(), Status> {
    if crate::is_valid_name(node_id) {
        Ok(())
    } else {
        Err(Status::invalid_argument(
            "node_id: 1-128 characters of letters, digits and -_.:/@",
        ))
    }
}

#[tonic::async_trait]
impl SnapshotService for SnapshotGrpc {
    type WatchStream = SnapshotStream;

    async fn watch(
        &self,
        request: Request<v1::WatchRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        let node_id = request.get_ref().node_id.clone();
        valid_node_id(&node_id)?;
        self.admit(&request, &node_id)?;
        let publisher = Arc::clone(&self.publisher);
        let mut latest = self.publisher.latest.subscribe();
        let mut stop = self.stop.clone();
        let heartbeat = self.heartbeat;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut stamps = Stamps(0);
            let mut sent = Arc::clone(&latest.borrow_and_update().state);
            let mut first = sent.to_full_message();
            publisher.auth.sign(&mut first, stamps.next());
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            tracing::info!(%node_id, version = sent.version(), "data plane connected");
            loop {
                let mut message = tokio::select! {
                    changed = latest.changed() => {
                        if changed.is_err() { return; }
                        let next = latest.borrow_and_update().clone();
                        // One version behind (the usual case): the delta computed once.
                        let delta = match &next.delta {
                            Some(delta) if delta_base(delta) == Some(sent.version()) => {
                                Some(delta.clone())
                            }
                            _ => sent.delta_to(&next.state),
                        };
                        sent = Arc::clone(&next.state);
                        match delta { Some(delta) => delta, None => continue }
                    }
                    () = tokio::time::sleep(heartbeat) => v1::SnapshotMessage {
                        version: sent.version(),
                        body: Some(Body::Heartbeat(v1::Heartbeat {})),
                        ..v1::SnapshotMessage::default()
                    },
                    () = tx.closed() => return,
                    _ = stop.changed() => return,
                };
                publisher.auth.sign(&mut message, stamps.next());
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn report_applied(
        &self,
        request: Request<v1::AppliedReport>,
    ) -> Result<Response<v1::AppliedAck>, Status> {
        valid_node_id(&request.get_ref().node_id)?;
        self.admit(&request, &request.get_ref().node_id)?;
        let report = request.into_inner();
        let breakers = breakers_of(report.breakers)?;
        let mut applied = self
            .publisher
            .applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if applied.len() >= 10_000 && !applied.contains_key(&report.node_id) {
            return Err(Status::resource_exhausted("too many data planes reporting"));
        }
        applied.insert(
            report.node_id.clone(),
            AppliedVersion {
                node_id: report.node_id,
                version: report.version,
                reported_at: routero_core::unix_now(),
                applied_at: report.applied_at_ms.div_euclid(1000).max(0),
                breakers,
            },
        );
        Ok(Response::new(v1::AppliedAck {}))
    }
}
