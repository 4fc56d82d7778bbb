//! Revocation reaching a fleet: `POST /key/delete` at the admin API, then every data plane
//! asked until it answers 401 (only a 401 counts: any other answer or error keeps asking).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;

use crate::Proc;
use crate::launch::{Up, admin};
use crate::measure::{Target, call, cpu_micros, percentile};

/// What the fan-out measured.
pub struct Fanout {
    pub replicas: usize,
    /// Each replica's time to refuse each revoked key, sorted.
    pub latencies: Vec<Duration>,
    /// The control plane's process CPU per revocation per replica, µs (its admin API work and
    /// the deltas it sends).
    pub cpu_per_delta_replica_us: f64,
}

/// A client asking from its own loopback address, the `n`th: the waits for a new key and a
/// revoked key's 401s are failed authentications, which a data plane throttles per source
/// (429 past 60 a minute), and only a 401 may end a wait.
pub fn asker(n: usize) -> Result<reqwest::Client> {
    let source = std::net::Ipv4Addr::new(127, 1, (n / 250) as u8, (n % 250 + 1) as u8);
    Ok(reqwest::Client::builder()
        .tcp_nodelay(true)
        .local_address(std::net::IpAddr::V4(source))
        .build()?)
}

/// Asks `done` until it says so, for at most `limit`; an error naming `what` after that.
pub async fn until<F, Fut>(limit: Duration, what: &str, mut done: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !done().await {
        anyhow::ensure!(Instant::now() < deadline, "{what}: not within {limit:?}");
    }
    Ok(())
}

/// Whether `target` refuses its key with 401 (any other answer, or none, is not a refusal).
pub async fn refuses(client: &reqwest::Client, target: &Target) -> bool {
    let answered = client
        .post(format!("{}/v1/chat/completions", target.url))
        .bearer_auth(&target.key)
        .header("content-type", "application/json")
        .body(r#"{"model":"bench","messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await;
    answered.is_ok_and(|r| r.status() == reqwest::StatusCode::UNAUTHORIZED)
}

/// Revokes `reps` fresh keys one after another, timing until each of `replicas` (data-plane
/// URLs) refuses it; asks each replica every `poll`.
async fn revoke_and_time(
    client: &reqwest::Client,
    up: &Up,
    replicas: &[String],
    reps: usize,
    poll: Duration,
) -> Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(reps * replicas.len());
    for rep in 0..reps {
        // One source waits for the new key (failed authentications until it arrives), another
        // asks for the revoked key's 401 (one failure): neither nears the throttle.
        let (waiter, asker) = (asker(2 * rep)?, asker(2 * rep + 1)?);
        let issued = admin(
            client,
            &up.admin_url,
            "/key/generate",
            json!({"models": ["bench"]}),
        )
        .await?;
        let key = issued["key"].as_str().context("key")?.to_owned();
        let targets: Vec<Target> = replicas
            .iter()
            .map(|url| Target {
                name: "replica",
                url: url.clone(),
                key: key.clone(),
                model: "bench",
                pid: None,
            })
            .collect();
        for target in &targets {
            until(Duration::from_secs(30), "the new key served", || async {
                let served = call(&waiter, target).await.is_ok();
                if !served {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                served
            })
            .await?;
        }
        let start = Instant::now();
        admin(
            client,
            &up.admin_url,
            "/key/delete",
            json!({"key_ids": [issued["key_id"]]}),
        )
        .await?;
        let pollers: Vec<_> = targets
            .into_iter()
            .map(|target| {
                let asker = asker.clone();
                tokio::spawn(async move {
                    until(
                        Duration::from_secs(30),
                        "the revoked key refused",
                        || async {
                            let refused = refuses(&asker, &target).await;
                            if !refused {
                                tokio::time::sleep(poll).await;
                            }
                            refused
                        },
                    )
                    .await?;
                    anyhow::Ok(start.elapsed())
                })
            })
            .collect();
        for poller in pollers {
            latencies.push(poller.await??);
        }
    }
    latencies.sort_unstable();
    Ok(latencies)
}

/// Revocation reaching `up`'s own data plane, `reps` times.
pub async fn revocation(client: &reqwest::Client, up: &Up, reps: usize) -> Result<String> {
    let latencies = revoke_and_time(
        client,
        up,
        std::slice::from_ref(&up.data_url),
        reps,
        Duration::ZERO,
    )
    .await?;
    Ok(format!(
        "\nRevocation propagation (`POST /key/delete` until the data plane answers 401), {} runs: p50 {:.1} ms, max {:.1} ms.\n",
        latencies.len(),
        percentile(&latencies, 0.5) / 1000.0,
        latencies.last().map_or(0.0, Duration::as_secs_f64) * 1000.0,
    ))
}

/// Starts `count` split data planes following `up`'s control plane and revokes `reps` keys,
/// timing each replica (asked every 2 ms).
pub async fn fanout(
    client: &reqwest::Client,
    bin_dir: &Path,
    up: &Up,
    count: usize,
    reps: usize,
) -> Result<Fanout> {
    let mut replicas: Vec<(Proc, Target)> = Vec::with_capacity(count);
    for _ in 0..count {
        replicas.push(up.data_plane(client, bin_dir, "replica", &[]).await?);
    }
    let urls: Vec<String> = replicas.iter().map(|(_, t)| t.url.clone()).collect();
    let cpu_before = cpu_micros(up.process.0.id())?;
    let latencies = revoke_and_time(client, up, &urls, reps, Duration::from_millis(2)).await?;
    let cpu = cpu_micros(up.process.0.id())?.saturating_sub(cpu_before);
    drop(replicas);
    Ok(Fanout {
        replicas: count,
        latencies,
        cpu_per_delta_replica_us: cpu as f64 / (reps * count) as f64,
    })
}

impl Fanout {
    /// One line for the README.
    pub fn line(&self) -> String {
        format!(
            "\nRevocation fan-out: {} data-plane replicas (processes on loopback) following one control plane, {} revocations, each replica asked every 2 ms until it answers 401: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; the control plane's process CPU {:.0} µs per revocation per replica (its admin API calls included).\n",
            self.replicas,
            self.latencies.len() / self.replicas.max(1),
            percentile(&self.latencies, 0.5) / 1000.0,
            percentile(&self.latencies, 0.99) / 1000.0,
            self.latencies.last().map_or(0.0, Duration::as_secs_f64) * 1000.0,
            self.cpu_per_delta_replica_us,
        )
    }
}
