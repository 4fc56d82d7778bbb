//! `make bench`: measures the data plane against two baselines in one run, on this machine:
//! the fake provider called directly, and a bare hyper pass-through proxy. Reports CPU µs per
//! request of the proxy process, latency added at concurrency 1 (p50, p99), requests/s at
//! concurrency 32, RSS, revocation propagation (admin API delete until the data plane
//! refuses), and SCIM reads and deprovisioning on a tenant of 10,000 users. Writes the table into `bench/README.md`.
// A measuring tool over its own fixtures and our own outputs, never client text.
#![expect(clippy::string_slice, clippy::indexing_slicing)]

mod bare_proxy;
mod scim;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Sequential requests per target at concurrency 1.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Seconds per target at concurrency 32.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Revocations to time.
    #[arg(long, default_value_t = 20)]
    revocations: usize,
    /// Users SCIM provisions before its reads are timed.
    #[arg(long, default_value_t = 10_000)]
    scim_users: usize,
    /// Audit events chained and committed per database for writer throughput.
    #[arg(long, default_value_t = 20_000)]
    audit_events: usize,
    /// File whose bench section is replaced with the results.
    #[arg(long)]
    readme: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Sub {
    /// Internal: run the bare proxy baseline.
    BareProxy { upstream: String },
}

const ADMIN_KEY: &str = "sk-rtadm-bench-0123456789abcdef0123456789abcdef";
const UPSTREAM_KEY: &str = "sk-upstream-bench";
const BODY: &str = r#"{"model":"bench","messages":[{"role":"user","content":"hello"}]}"#;

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` and returns it with the URL from its first `listening on <url>` line.
fn spawn_listening(mut cmd: Command) -> Result<(Proc, String)> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .context("no listening line")?
        .to_owned();
    Ok((Proc(child), url))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Process CPU time (user + system) in microseconds, from /proc.
fn cpu_micros(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let hz: u64 = String::from_utf8(Command::new("getconf").arg("CLK_TCK").output()?.stdout)?
        .trim()
        .parse()?;
    Ok(ticks * 1_000_000 / hz)
}

fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("VmRSS")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb / 1024.0)
}

struct Target {
    name: &'static str,
    url: String,
    key: String,
    model: &'static str,
    pid: Option<u32>,
}

struct Measured {
    p50_us: f64,
    p99_us: f64,
    rps: f64,
    cpu_us_per_request: Option<f64>,
    rss_mib: Option<f64>,
}

async fn call(client: &reqwest::Client, target: &Target) -> Result<()> {
    let body = BODY.replace("bench", target.model);
    let response = client
        .post(format!("{}/v1/chat/completions", target.url))
        .bearer_auth(&target.key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("{} answered {}", target.name, response.status());
    }
    response.bytes().await?;
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e6
}

async fn measure(client: &reqwest::Client, target: &Target, args: &Args) -> Result<Measured> {
    for _ in 0..200 {
        call(client, target).await?;
    }
    let mut latencies = Vec::with_capacity(args.requests);
    for _ in 0..args.requests {
        let start = Instant::now();
        call(client, target).await?;
        latencies.push(start.elapsed());
    }
    latencies.sort_unstable();

    let cpu_before = target.pid.map(cpu_micros).transpose()?;
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let client = client.clone();
        let done = Arc::clone(&done);
        let target = Target {
            name: target.name,
            url: target.url.clone(),
            key: target.key.clone(),
            model: target.model,
            pid: None,
        };
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                call(&client, &target).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let count = done.load(Ordering::Relaxed);
    let cpu = match (target.pid, cpu_before) {
        (Some(pid), Some(before)) => Some((cpu_micros(pid)? - before) as f64 / count as f64),
        _ => None,
    };
    Ok(Measured {
        p50_us: percentile(&latencies, 0.5),
        p99_us: percentile(&latencies, 0.99),
        rps: count as f64 / elapsed,
        cpu_us_per_request: cpu,
        rss_mib: target.pid.map(rss_mib).transpose()?,
    })
}

async fn admin(client: &reqwest::Client, base: &str, path: &str, body: Value) -> Result<Value> {
    let response = client
        .post(format!("{base}{path}"))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    let status = response.status();
    let value: Value = serde_json::from_slice(&response.bytes().await?)?;
    if !status.is_success() {
        bail!("{path}: {status} {value}");
    }
    Ok(value)
}

async fn wait_ready(client: &reqwest::Client, url: &str) -> Result<()> {
    for _ in 0..400 {
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{url} never became ready")
}

/// Times key deletion at the admin API until the data plane refuses the key.
async fn revocation_latencies(
    client: &reqwest::Client,
    admin_url: &str,
    data_url: &str,
    reps: usize,
) -> Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(reps);
    for _ in 0..reps {
        let issued = admin(
            client,
            admin_url,
            "/key/generate",
            json!({"models": ["bench"]}),
        )
        .await?;
        let key = issued["key"].as_str().context("key")?.to_owned();
        let target = Target {
            name: "revocation",
            url: data_url.to_owned(),
            key: key.clone(),
            model: "bench",
            pid: None,
        };
        while call(client, &target).await.is_err() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let start = Instant::now();
        admin(
            client,
            admin_url,
            "/key/delete",
            json!({"key_ids": [issued["key_id"]]}),
        )
        .await?;
        while call(client, &target).await.is_ok() {}
        latencies.push(start.elapsed());
    }
    latencies.sort_unstable();
    Ok(latencies)
}

/// Events per second the audit store chains and commits, in writer-sized batches, on SQLite
/// and (when reachable) PostgreSQL.
async fn writer_throughput(events: usize) -> Result<String> {
    use routero_core::audit::{ActorKind, EventType, Outcome};
    let dir = std::env::temp_dir().join(format!("routero-bench-audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut urls = vec![(
        "SQLite",
        format!("sqlite://{}", dir.join("audit.db").display()),
    )];
    let server = std::env::var("ROUTERO_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let name = format!("routero_bench_{}", std::process::id());
    let created = Command::new("psql")
        .args([
            &format!("{server}/postgres"),
            "-qc",
            &format!("CREATE DATABASE {name}"),
        ])
        .status()
        .is_ok_and(|s| s.success());
    if created {
        urls.push(("PostgreSQL", format!("{server}/{name}")));
    }
    let mut line = format!(
        "\nAudit writer throughput ({events} events in batches of 512, chained and committed):"
    );
    for (label, url) in urls {
        let store = routero_audit::AuditStore::connect(&url).await?;
        let batch: Vec<_> = (0..events)
            .map(|i| {
                let tenant = format!("tenant-{}", i % 4);
                routero_bus::event(
                    &tenant,
                    EventType::RequestRouted,
                    routero_bus::actor(ActorKind::VirtualKey, Some(format!("key_{i}"))),
                    routero_bus::resource("model", Some("bench".into())),
                    Outcome::Success,
                )
            })
            .collect();
        let start = Instant::now();
        for chunk in batch.chunks(512) {
            store.append(chunk).await?;
        }
        let rate = events as f64 / start.elapsed().as_secs_f64();
        line.push_str(&format!(" {label} {rate:.0} events/s;"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    if created {
        let _ = Command::new("psql")
            .args([
                &format!("{server}/postgres"),
                "-qc",
                &format!("DROP DATABASE {name}"),
            ])
            .status();
    }
    line.pop();
    line.push_str(".\n");
    Ok(line)
}

fn fmt_opt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "–".into(), |v| format!("{v:.digits$}"))
}

fn write_readme(path: &Path, table: &str) -> Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (begin, end) = ("<!-- bench:begin -->", "<!-- bench:end -->");
    let updated = match (text.find(begin), text.find(end)) {
        (Some(b), Some(e)) if b < e => format!("{}{begin}\n{table}{}", &text[..b], &text[e..]),
        _ => format!("{text}\n{begin}\n{table}{end}\n"),
    };
    std::fs::write(path, updated)?;
    Ok(())
}

/// A `routero up` with a provider, a model `bench` and a key for it.
struct Up {
    process: Proc,
    dir: std::path::PathBuf,
    admin_url: String,
    data_url: String,
    grpc_port: u16,
    key: String,
}

/// A model and key of no governance, or with a price, a budget and rate limits that every
/// request is counted against (never reached here).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Metering {
    Off,
    Budgets,
}

async fn start_up(
    client: &reqwest::Client,
    bin_dir: &std::path::Path,
    fake_url: &str,
    (name, metering): (&str, Metering),
    env: &[(&str, &str)],
) -> Result<Up> {
    let dir = std::env::temp_dir().join(format!("routero-bench-{}-{name}", std::process::id()));
    let (admin_port, grpc_port, data_port) = (free_port()?, free_port()?, free_port()?);
    let process = Proc(
        Command::new(bin_dir.join("routero"))
            .arg("up")
            .env("ROUTERO_DATA_DIR", &dir)
            .env("ROUTERO_ADMIN_KEY", ADMIN_KEY)
            .env(
                "ROUTERO_CONTROL_PLANE_ADDR",
                format!("127.0.0.1:{admin_port}"),
            )
            .env("ROUTERO_GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
            .env("ROUTERO_DATA_PLANE_ADDR", format!("127.0.0.1:{data_port}"))
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let (admin_url, data_url) = (
        format!("http://127.0.0.1:{admin_port}"),
        format!("http://127.0.0.1:{data_port}"),
    );
    wait_ready(client, &format!("{admin_url}/readyz")).await?;
    wait_ready(client, &format!("{data_url}/readyz")).await?;
    admin(client, &admin_url, "/credentials", json!({"name": "fake", "provider": "openai", "api_key": UPSTREAM_KEY, "base_url": format!("{fake_url}/v1")})).await?;
    // The same fake provider in Anthropic's shape: its requests and answers translated.
    admin(client, &admin_url, "/credentials", json!({"name": "claude", "provider": "anthropic", "api_key": UPSTREAM_KEY, "base_url": fake_url})).await?;
    admin(client, &admin_url, "/models", json!({"name": "bench-claude", "deployments": [{"credential": "claude", "model": "fake-model"}]})).await?;
    let (mut model, mut key) = (
        json!({"name": "bench", "deployments": [{"credential": "fake", "model": "fake-model"}]}),
        json!({"models": ["bench", "bench-claude"]}),
    );
    if metering == Metering::Budgets {
        model["pricing"] = json!({"input_per_mtok": 0.15, "output_per_mtok": 0.60});
        key["max_budget"] = json!(1_000_000);
        key["budget_duration"] = json!("30d");
        key["rpm_limit"] = json!(10_000_000);
        key["tpm_limit"] = json!(10_000_000);
    }
    admin(client, &admin_url, "/models", model).await?;
    let key = admin(client, &admin_url, "/key/generate", key).await?["key"]
        .as_str()
        .context("key")?
        .to_owned();
    let up = Up {
        process,
        dir,
        admin_url,
        data_url,
        grpc_port,
        key,
    };
    while call(client, &up.target("probe")).await.is_err() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(up)
}

impl Up {
    /// Its data plane, called with its key for the model `bench`.
    fn target(&self, name: &'static str) -> Target {
        self.target_of(name, "bench")
    }

    /// Its data plane, called with its key for `model`.
    fn target_of(&self, name: &'static str, model: &'static str) -> Target {
        Target {
            name,
            url: self.data_url.clone(),
            key: self.key.clone(),
            model,
            pid: Some(self.process.0.id()),
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(Sub::BareProxy { upstream }) = args.command {
        return runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            writeln!(
                std::io::stdout(),
                "listening on http://{}",
                listener.local_addr()?
            )?;
            std::io::stdout().flush()?;
            bare_proxy::serve(listener, upstream).await
        });
    }
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let exe = std::env::current_exe()?;
    let bin_dir = exe.parent().context("bin dir")?;
    let mut fake_cmd = Command::new(bin_dir.join("routero-fake-provider"));
    fake_cmd.args(["--port", "0", "--no-record", "--api-key", UPSTREAM_KEY]);
    let (fake, fake_url) = spawn_listening(fake_cmd)?;
    let mut bare_cmd = Command::new(&exe);
    bare_cmd.args(["bare-proxy", &fake_url]);
    let (bare, bare_url) = spawn_listening(bare_cmd)?;

    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(64)
        .build()?;
    // Without policies (as the data plane alone below), and with them: decisions cached, and
    // every decision asked of Cerbos (the cache never settles).
    let up = start_up(
        &client,
        bin_dir,
        &fake_url,
        ("plain", Metering::Off),
        &[("ROUTERO_POLICIES_DIR", "")],
    )
    .await?;
    // A priced model and a key with a budget and rate limits, counted in the process and in
    // Redis (`ROUTERO_BENCH_REDIS_URL`, by default the local one `make test` starts).
    let metered = start_up(
        &client,
        bin_dir,
        &fake_url,
        ("metered", Metering::Budgets),
        &[("ROUTERO_POLICIES_DIR", "")],
    )
    .await?;
    let redis_url = std::env::var("ROUTERO_BENCH_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let redis = start_up(
        &client,
        bin_dir,
        &fake_url,
        ("redis", Metering::Budgets),
        &[
            ("ROUTERO_POLICIES_DIR", ""),
            ("ROUTERO_REDIS_URL", &redis_url),
        ],
    )
    .await?;
    let policies = std::env::current_dir()?.join("policies");
    let policies = policies.to_string_lossy();
    let warm = start_up(
        &client,
        bin_dir,
        &fake_url,
        ("warm", Metering::Off),
        &[
            ("ROUTERO_POLICIES_DIR", &policies),
            ("ROUTERO_POLICY_CACHE_SETTLE", "0s"),
        ],
    )
    .await?;
    let cold = start_up(
        &client,
        bin_dir,
        &fake_url,
        ("cold", Metering::Off),
        &[
            ("ROUTERO_POLICIES_DIR", &policies),
            ("ROUTERO_POLICY_CACHE_SETTLE", "100000s"),
        ],
    )
    .await?;

    // The same snapshot served by a data plane alone (no kafka_brokers, allowed unaudited, so no
    // audit events), to separate the cost of auditing.
    let data_plane_key = std::fs::read_to_string(up.dir.join("data-plane.key"))?;
    let alone_port = free_port()?;
    let alone = Proc(
        Command::new(bin_dir.join("routero"))
            .arg("data-plane")
            .env(
                "ROUTERO_CONTROL_PLANE_URL",
                format!("http://127.0.0.1:{}", up.grpc_port),
            )
            .env("ROUTERO_DATA_PLANE_KEY", data_plane_key.trim())
            .env("ROUTERO_DATA_PLANE_ADDR", format!("127.0.0.1:{alone_port}"))
            .env("ROUTERO_ALLOW_UNAUDITED", "true")
            // The fake provider is on loopback, which a split data plane refuses unless allowed.
            .env("ROUTERO_EGRESS_ALLOW", "127.0.0.1/32")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let alone_url = format!("http://127.0.0.1:{alone_port}");
    wait_ready(&client, &format!("{alone_url}/readyz")).await?;

    let targets = [
        Target {
            name: "direct to provider",
            url: fake_url.clone(),
            key: UPSTREAM_KEY.into(),
            model: "fake-model",
            pid: None,
        },
        Target {
            name: "bare hyper proxy",
            url: bare_url,
            key: UPSTREAM_KEY.into(),
            model: "fake-model",
            pid: Some(bare.0.id()),
        },
        Target {
            name: "routero data plane alone, no audit",
            url: alone_url,
            key: up.key.clone(),
            model: "bench",
            pid: Some(alone.0.id()),
        },
        up.target("routero up: data plane + audit chain written"),
        up.target_of(
            "routero up, an Anthropic deployment (chat ↔ Messages translated)",
            "bench-claude",
        ),
        metered.target("routero up + price, budget and rate limits (in process)"),
        redis.target("routero up + price, budget and rate limits (Redis)"),
        warm.target("routero up + Cerbos policies, decision cached"),
        cold.target("routero up + Cerbos policies, every decision asked"),
    ];
    let mut results = Vec::new();
    for target in &targets {
        results.push(measure(&client, target, &args).await?);
    }
    let revocations =
        revocation_latencies(&client, &up.admin_url, &up.data_url, args.revocations).await?;
    let scim = scim::figures(
        &client,
        &up.admin_url,
        &up.data_url,
        args.scim_users,
        args.revocations,
    )
    .await?;
    drop((fake, bare, alone));
    for started in [up, metered, redis, warm, cold] {
        drop(started.process);
        let _ = std::fs::remove_dir_all(&started.dir);
    }
    let throughput = writer_throughput(args.audit_events).await?;

    let direct_p50 = results[0].p50_us;
    let direct_p99 = results[0].p99_us;
    let mut table = String::from(
        "| target | CPU µs/request (proxy process) | p50 µs (c=1) | added p50 µs | p99 µs (c=1) | added p99 µs | requests/s (c=32) | RSS MiB |\n|---|---|---|---|---|---|---|---|\n",
    );
    for (target, m) in targets.iter().zip(&results) {
        let added = target.pid.is_some();
        table.push_str(&format!(
            "| {} | {} | {:.0} | {} | {:.0} | {} | {:.0} | {} |\n",
            target.name,
            fmt_opt(m.cpu_us_per_request, 1),
            m.p50_us,
            fmt_opt(added.then_some(m.p50_us - direct_p50), 0),
            m.p99_us,
            fmt_opt(added.then_some(m.p99_us - direct_p99), 0),
            m.rps,
            fmt_opt(m.rss_mib, 1),
        ));
    }
    table.push_str(&format!(
        "\nRevocation propagation (`POST /key/delete` until the data plane answers 401), {} runs: p50 {:.1} ms, max {:.1} ms.\n",
        revocations.len(),
        percentile(&revocations, 0.5) / 1000.0,
        revocations.last().map_or(0.0, Duration::as_secs_f64) * 1000.0,
    ));
    table.push_str(&scim);
    table.push_str(&throughput);
    writeln!(std::io::stdout(), "{table}")?;
    if let Some(path) = &args.readme {
        write_readme(path, &table)?;
    }
    Ok(())
}
