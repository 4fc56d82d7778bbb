//! What one target is measured by: the same chat completion (about 1 KiB in and 1 KiB out) at
//! concurrency 1 and 32, the CPU its processes spent per request, their memory, and the time
//! a stream's first event takes.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

/// About 1 KiB of ordinary prose: the fake provider says it back (`say:`), so a request
/// carries it to the provider and its answer carries it back, through any guardrails.
const PROSE: &str = "The quarterly planning review covers the migration of the billing \
    service to the new cluster, the hiring plan for the platform team, and the open questions \
    about data retention in the analytics pipeline. Each team lead summarised progress against \
    the goals set in the spring: the payments team finished the move to event sourcing two \
    weeks ahead of schedule, the search team is still tuning relevance for long queries, and \
    the mobile team shipped the redesigned onboarding flow to half of new users. Risks raised \
    in the meeting were the dependency on a single vendor for message delivery, the growing \
    cost of log storage, and the time it takes to review access requests. The group agreed to \
    draft a proposal for tiered log retention, to pilot automated access reviews with two \
    teams, and to revisit the vendor question after the contract renewal. Action items were \
    assigned with owners and dates, and the next review is scheduled for the first week of the \
    following quarter, with a short written update expected from every team beforehand.";

/// A gateway (or baseline) answering OpenAI's chat completions at `{url}/v1/chat/completions`.
#[derive(Clone)]
pub struct Target {
    pub name: &'static str,
    pub url: String,
    pub key: String,
    pub model: &'static str,
    /// The process whose CPU and memory are its cost (with its children), if any.
    pub pid: Option<u32>,
}

/// A target's figures.
pub struct Measured {
    pub p50_us: f64,
    pub p99_us: f64,
    pub rps: f64,
    pub p99_c32_ms: f64,
    pub cpu_us_per_request: Option<f64>,
    pub rss_mib: Option<f64>,
}

/// The request body for `model`, streamed or not.
fn body(model: &str, stream: bool) -> String {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": format!("say:{PROSE}")}]})
        .to_string()
}

async fn send(
    client: &reqwest::Client,
    target: &Target,
    stream: bool,
) -> Result<reqwest::Response> {
    let response = client
        .post(format!("{}/v1/chat/completions", target.url))
        .bearer_auth(&target.key)
        .header("content-type", "application/json")
        .body(body(target.model, stream))
        .send()
        .await?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        bail!("{} answered {status}: {text}", target.name);
    }
    Ok(response)
}

/// One chat completion, read to its end; an error unless it succeeded.
pub async fn call(client: &reqwest::Client, target: &Target) -> Result<()> {
    send(client, target, false).await?.bytes().await?;
    Ok(())
}

/// The `p`th quantile of sorted durations, in µs.
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e6
}

/// 200 warm-up requests, `requests` at concurrency 1, then `seconds` at concurrency 32.
pub async fn measure(
    client: &reqwest::Client,
    target: &Target,
    requests: usize,
    seconds: u64,
) -> Result<Measured> {
    for _ in 0..200 {
        call(client, target).await?;
    }
    let mut latencies = Vec::with_capacity(requests);
    for _ in 0..requests {
        let start = Instant::now();
        call(client, target).await?;
        latencies.push(start.elapsed());
    }
    latencies.sort_unstable();

    let profile = profiler(target)?;
    let cpu_before = target.pid.map(cpu_micros).transpose()?;
    let loaded = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (client, target, loaded) = (client.clone(), target.clone(), Arc::clone(&loaded));
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while Instant::now() < deadline {
                let sent = Instant::now();
                call(&client, &target).await?;
                mine.push(sent.elapsed());
            }
            loaded
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(mine);
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    if let Some(mut perf) = profile {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &perf.id().to_string()])
            .status();
        perf.wait()?;
    }
    let mut loaded = std::mem::take(&mut *loaded.lock().unwrap_or_else(PoisonError::into_inner));
    loaded.sort_unstable();
    let count = loaded.len();
    let cpu = match (target.pid, cpu_before) {
        (Some(pid), Some(before)) => {
            Some(cpu_micros(pid)?.saturating_sub(before) as f64 / count as f64)
        }
        _ => None,
    };
    Ok(Measured {
        p50_us: percentile(&latencies, 0.5),
        p99_us: percentile(&latencies, 0.99),
        rps: count as f64 / elapsed,
        p99_c32_ms: percentile(&loaded, 0.99) / 1000.0,
        cpu_us_per_request: cpu,
        rss_mib: target.pid.map(rss_mib).transpose()?,
    })
}

/// With `ROUTERO_BENCH_PROFILE` naming parts of target names (comma-separated) and `perf` on
/// the path: a `perf record` of a matching target's process during the concurrency-32 phase,
/// into `perf-<target>.data` in the current directory, read with `perf report -i`.
fn profiler(target: &Target) -> Result<Option<std::process::Child>> {
    let (Ok(wanted), Some(pid)) = (std::env::var("ROUTERO_BENCH_PROFILE"), target.pid) else {
        return Ok(None);
    };
    if !wanted
        .split(',')
        .any(|part| !part.is_empty() && target.name.contains(part))
    {
        return Ok(None);
    }
    let slug: String = target
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let perf = std::process::Command::new("perf")
        .args(["record", "-F", "999", "-g", "-p", &pid.to_string(), "-o"])
        .arg(format!("perf-{slug}.data"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("perf record")?;
    // perf attaches before the load starts.
    std::thread::sleep(Duration::from_millis(500));
    Ok(Some(perf))
}

/// Times to a stream's first event (its first bytes after the headers), `count` streams one
/// after another, sorted.
pub async fn first_events(
    client: &reqwest::Client,
    target: &Target,
    count: usize,
) -> Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(count);
    for _ in 0..count + 50 {
        let start = Instant::now();
        let mut response = send(client, target, true).await?;
        let first = response.chunk().await?.context("an empty stream")?;
        let taken = start.elapsed();
        anyhow::ensure!(first.starts_with(b"data: "), "not an event stream");
        while response.chunk().await?.is_some() {}
        times.push(taken);
    }
    // The first 50 warm the connection and the caches.
    times.drain(..50);
    times.sort_unstable();
    Ok(times)
}

/// The process `pid` and its descendants.
fn family(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let child: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let parent = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((child, parent))
        })
        .collect();
    let mut found = vec![pid];
    let mut next = 0;
    while let Some(&parent) = found.get(next) {
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        next += 1;
    }
    found
}

/// CPU time (user + system) of `pid` and its children in microseconds, from /proc.
pub fn cpu_micros(pid: u32) -> Result<u64> {
    let hz: u64 = String::from_utf8(
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()?
            .stdout,
    )?
    .trim()
    .parse()?;
    let mut ticks = 0;
    for member in family(pid) {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{member}/stat")) else {
            continue;
        };
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("stat")?
            .1
            .split_whitespace()
            .collect();
        ticks += fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    }
    Ok(ticks * 1_000_000 / hz)
}

/// Resident memory of `pid` and its children, in MiB.
pub fn rss_mib(pid: u32) -> Result<f64> {
    let mut kb = 0.0;
    for member in family(pid) {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{member}/status")) else {
            continue;
        };
        kb += status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .map_or(Ok(0.0), |v| v.trim().trim_end_matches("kB").trim().parse())?;
    }
    Ok(kb / 1024.0)
}
