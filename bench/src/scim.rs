//! SCIM figures of `make bench`, against `routero up`: a tenant of `users` provisioned through
//! `/scim/v2`, then the latency of a `userName eq` filter and of a 100-user page, and the time
//! from a SCIM `active: false` answered to the data plane refusing the user's key.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::launch::admin;
use crate::measure::{Target, call, percentile};

/// Requests timed per SCIM read.
const READS: usize = 200;

async fn scim(
    client: &reqwest::Client,
    token: &str,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value> {
    let mut request = client.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/scim+json")
            .body(body.to_string());
    }
    let response = request.send().await?;
    let status = response.status();
    let value: Value = serde_json::from_slice(&response.bytes().await?)?;
    if !status.is_success() {
        bail!("{url}: {status} {value}");
    }
    Ok(value)
}

async fn timed_reads(
    client: &reqwest::Client,
    token: &str,
    url: &str,
    expect: usize,
) -> Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(READS);
    for _ in 0..READS {
        let start = Instant::now();
        let page = scim(client, token, reqwest::Method::GET, url, None).await?;
        latencies.push(start.elapsed());
        let got = page["Resources"].as_array().map_or(0, Vec::len);
        if got != expect {
            bail!("{url}: {got} resources, expected {expect}");
        }
    }
    latencies.sort_unstable();
    Ok(latencies)
}

/// Provisions `users` users, times reads and deprovisionings; returns the README lines.
pub(crate) async fn figures(
    client: &reqwest::Client,
    admin_url: &str,
    data_url: &str,
    users: usize,
    deprovisionings: usize,
) -> Result<String> {
    let issued = admin(client, admin_url, "/scim/tokens", json!({"name": "bench"})).await?;
    let token = issued["token"].as_str().context("token")?.to_owned();
    let base = format!("{admin_url}/scim/v2");
    let started = Instant::now();
    let mut pending = Vec::new();
    for i in 0..users {
        let (client, token, url) = (client.clone(), token.clone(), format!("{base}/Users"));
        pending.push(tokio::spawn(async move {
            let body = json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": format!("user-{i:05}@example.com"),
                "name": {"givenName": "User", "familyName": format!("N{i}")},
                "emails": [{"value": format!("user-{i:05}@example.com"), "type": "work", "primary": true}],
                "active": true,
            });
            scim(&client, &token, reqwest::Method::POST, &url, Some(body)).await
        }));
        if pending.len() == 16 {
            for task in pending.drain(..) {
                task.await??;
            }
        }
    }
    for task in pending {
        task.await??;
    }
    let provisioned = started.elapsed();
    let filter = timed_reads(
        client,
        &token,
        &format!(
            "{base}/Users?filter=userName%20eq%20%22user-{:05}@example.com%22",
            users / 2
        ),
        1,
    )
    .await?;
    let page = timed_reads(
        client,
        &token,
        &format!("{base}/Users?startIndex={}&count=100", users / 2),
        100,
    )
    .await?;

    let mut refusals = Vec::with_capacity(deprovisionings);
    for i in 0..deprovisionings {
        let user = scim(
            client,
            &token,
            reqwest::Method::POST,
            &format!("{base}/Users"),
            Some(json!({"userName": format!("leaver-{i}@example.com"), "active": true})),
        )
        .await?;
        let id = user["id"].as_str().context("id")?;
        let key = admin(
            client,
            admin_url,
            "/key/generate",
            json!({"models": ["bench"], "user_id": id}),
        )
        .await?;
        let target = Target {
            name: "deprovisioned key",
            url: data_url.to_owned(),
            key: key["key"].as_str().context("key")?.to_owned(),
            model: "bench",
            pid: None,
        };
        let n = 1000 + 2 * refusals.len();
        let (waiter, asker) = (crate::fleet::asker(n)?, crate::fleet::asker(n + 1)?);
        crate::fleet::until(Duration::from_secs(30), "the user's key served", || async {
            let served = call(&waiter, &target).await.is_ok();
            if !served {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            served
        })
        .await?;
        let patch = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "active", "value": false}],
        });
        scim(
            client,
            &token,
            reqwest::Method::PATCH,
            &format!("{base}/Users/{id}"),
            Some(patch),
        )
        .await?;
        let start = Instant::now();
        crate::fleet::until(Duration::from_secs(30), "the user's key refused", || {
            crate::fleet::refuses(&asker, &target)
        })
        .await?;
        refusals.push(start.elapsed());
    }
    refusals.sort_unstable();
    let ms = |sorted: &[Duration], p: f64| percentile(sorted, p) / 1000.0;
    Ok(format!(
        "\nSCIM on `routero up` (SQLite), a tenant of {users} users provisioned through `POST /scim/v2/Users` \
         (16 at a time) in {:.1} s; {READS} requests each: `GET /Users?filter=userName eq \"…\"` p50 {:.1} ms, \
         p99 {:.1} ms; a 100-user page (`startIndex={}&count=100`) p50 {:.1} ms, p99 {:.1} ms. \
         Deprovisioning (SCIM `active: false` answered until the data plane answers 401), {} runs: \
         p50 {:.1} ms, p99 {:.1} ms.\n",
        provisioned.as_secs_f64(),
        ms(&filter, 0.5),
        ms(&filter, 0.99),
        users / 2,
        ms(&page, 0.5),
        ms(&page, 0.99),
        refusals.len(),
        ms(&refusals, 0.5),
        ms(&refusals, 0.99),
    ))
}
