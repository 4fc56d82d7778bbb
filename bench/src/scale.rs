//! Scale: many tenants and keys loaded in one data plane. Tenants are created with
//! `routero admin create-tenant` and their keys issued through the admin API with each
//! tenant's own admin key, as an operator would; then a fresh split data plane follows the
//! control plane and is timed to ready (the full snapshot received, checked and applied) and
//! its memory read.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::launch::{ADMIN_KEY, Up};
use crate::measure::rss_mib;

/// Creates tenant `name` in the `routero up` data directory `dir`; returns its admin key.
fn create_tenant(bin_dir: &Path, dir: &Path, name: &str) -> Result<String> {
    let output = Command::new(bin_dir.join("routero"))
        .args(["admin", "create-tenant", name])
        .env("ROUTERO_DATA_DIR", dir)
        .env("ROUTERO_ADMIN_KEY", ADMIN_KEY)
        .env("RUST_LOG", "warn")
        .output()?;
    let text = String::from_utf8(output.stdout)?;
    text.rsplit_once(": ")
        .map(|(_, key)| key.trim().to_owned())
        .filter(|key| output.status.success() && !key.is_empty())
        .with_context(|| format!("create-tenant {name}: {text}"))
}

/// Runs `work(i)` for i in 0..count on `workers` tasks.
async fn in_parallel<F, Fut>(count: usize, workers: usize, work: F) -> Result<()>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let work = Arc::new(work);
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (next, work) = (Arc::clone(&next), Arc::clone(&work));
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return anyhow::Ok(());
                    }
                    work(i).await?;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Loads `tenants` tenants of `keys_per_tenant` keys each into `up`, then times a fresh data
/// plane to ready on them; one line for the README.
pub async fn figures(
    client: &reqwest::Client,
    bin_dir: &Path,
    up: &Up,
    tenants: usize,
    keys_per_tenant: usize,
) -> Result<String> {
    let start = Instant::now();
    let admin_keys = Arc::new(std::sync::Mutex::new(vec![String::new(); tenants]));
    {
        let (bin_dir, admin_keys) = (bin_dir.to_owned(), Arc::clone(&admin_keys));
        let up = Arc::new((up.dir.clone(), up.admin_url.clone()));
        in_parallel(tenants, 4, move |i| {
            let (bin_dir, admin_keys, up) =
                (bin_dir.clone(), Arc::clone(&admin_keys), Arc::clone(&up));
            async move {
                let key = tokio::task::spawn_blocking(move || {
                    create_tenant(&bin_dir, &up.0, &format!("scale-{i:04}"))
                })
                .await??;
                if let Some(slot) = admin_keys
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get_mut(i)
                {
                    *slot = key;
                }
                Ok(())
            }
        })
        .await?;
    }
    let tenants_took = start.elapsed();
    let admin_keys: Arc<Vec<String>> = Arc::new(std::mem::take(
        &mut *admin_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    ));
    let start = Instant::now();
    let total = tenants * keys_per_tenant;
    // The last key issued: the fresh data plane must know it.
    let last = Arc::new(std::sync::Mutex::new(String::new()));
    {
        let (client, url, admin_keys) = (
            client.clone(),
            up.admin_url.clone(),
            Arc::clone(&admin_keys),
        );
        let last = Arc::clone(&last);
        in_parallel(total, 16, move |i| {
            let (client, url, last) = (client.clone(), url.clone(), Arc::clone(&last));
            let admin_key = admin_keys
                .get(i / keys_per_tenant)
                .cloned()
                .unwrap_or_default();
            async move {
                let response = client
                    .post(format!("{url}/key/generate"))
                    .bearer_auth(admin_key)
                    .header("content-type", "application/json")
                    .body(json!({"metadata": {"bench": i}}).to_string())
                    .send()
                    .await?;
                if !response.status().is_success() {
                    bail!("key/generate: {}", response.status());
                }
                if i + 1 == total {
                    let issued: serde_json::Value =
                        serde_json::from_slice(&response.bytes().await?)?;
                    *last
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) =
                        issued["key"].as_str().unwrap_or_default().to_owned();
                }
                Ok(())
            }
        })
        .await?;
    }
    let keys_took = start.elapsed();

    let spawned = Instant::now();
    let (replica, target) = up.data_plane(client, bin_dir, "scale", &[]).await?;
    let serving = spawned.elapsed();
    // The last key's tenant has no model `bench`: once known, the key is refused for the model
    // (a 4xx other than 401); a key never issued stays unknown (401). Asked from sources of
    // their own: unknown keys are failed authentications, which a data plane throttles.
    let status = |key: String, asker: reqwest::Client| {
        let url = format!("{}/v1/chat/completions", target.url);
        async move {
            asker
                .post(url)
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(r#"{"model":"bench","messages":[{"role":"user","content":"hi"}]}"#)
                .send()
                .await
                .map_or(0, |r| r.status().as_u16())
        }
    };
    let last = last
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let waiter = crate::fleet::asker(4000)?;
    crate::fleet::until(Duration::from_secs(30), "the last key known", || async {
        let known = status(last.clone(), waiter.clone()).await;
        let done = (400..500).contains(&known) && known != 401 && known != 429;
        if !done {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        done
    })
    .await?;
    let ready = spawned.elapsed();
    let rss = rss_mib(replica.0.id())?;
    let unknown = status(
        format!("sk-rt-{}", "0".repeat(43)),
        crate::fleet::asker(4001)?,
    )
    .await;
    anyhow::ensure!(unknown == 401, "a key never issued answered {unknown}");
    drop((replica, target));
    Ok(format!(
        "\nScale: {tenants} tenants (`routero admin create-tenant`, {:.0} s) with {keys_per_tenant} keys each issued through `POST /key/generate` by each tenant's admin ({total} keys in {:.0} s, {:.0} a second); a fresh split data plane following that control plane served its first request {:.2} s after it was started (full snapshot received, checked and applied) and knew the last key issued at {:.2} s, holding {rss:.1} MiB resident.\n",
        tenants_took.as_secs_f64(),
        keys_took.as_secs_f64(),
        total as f64 / keys_took.as_secs_f64(),
        serving.as_secs_f64(),
        ready.as_secs_f64(),
    ))
}
