//! `make bench`: measures Routero against two baselines and two peers in one run, on this
//! machine: the fake provider called directly, a bare hyper pass-through proxy, split data
//! planes one layer at a time, `routero up` with each kind of governance, TensorZero and
//! LiteLLM. Reports CPU µs per request (and its ratio to the bare proxy), requests/s and p99 at
//! concurrency 32, latency added at concurrency 1, RSS, a stream's first event, revocation
//! reaching one data plane and a fleet of them, SCIM on a tenant of 10,000 users, and the audit
//! writer's throughput; writes them into `bench/README.md`.
// A measuring tool over its own fixtures and our own outputs, never client text.
#![expect(clippy::string_slice, clippy::indexing_slicing)]

mod bare_proxy;
mod fleet;
mod launch;
mod measure;
mod otlp_sink;
mod peers;
mod scale;
mod scim;
mod writer;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use launch::{Governs, UPSTREAM_KEY, start_up};
use measure::{Measured, Target, measure, percentile};

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
    /// Data-plane replicas a revocation fans out to.
    #[arg(long, default_value_t = 50)]
    replicas: usize,
    /// Tenants loaded for the scale figure.
    #[arg(long, default_value_t = 1000)]
    tenants: usize,
    /// Keys issued per tenant for the scale figure (the goal is 100; issuing them through the
    /// admin API on SQLite runs at about 170 a second, see bench/README.md).
    #[arg(long, default_value_t = 10)]
    keys_per_tenant: usize,
    /// Where `bench/peers/install.sh` put the peers' environments.
    #[arg(long, env = "ROUTERO_BENCH_PEERS")]
    peers: Option<PathBuf>,
    /// Users SCIM provisions before its reads are timed.
    #[arg(long, default_value_t = 10_000)]
    scim_users: usize,
    /// Audit events chained and committed per database for writer throughput.
    #[arg(long, default_value_t = 50_000)]
    audit_events: usize,
    /// File whose bench section is replaced with the results.
    #[arg(long)]
    readme: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Sub {
    /// Internal: run the bare proxy baseline.
    BareProxy { upstream: String },
    /// Only the audit writer's throughput (to profile it).
    Writer,
    /// Only the scale figure (`--tenants`, `--keys-per-tenant`).
    Scale,
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // Asked to stop first, so that it stops its own children (`routero up`'s Cerbos);
        // killed if it has not within 5 s.
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..50 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` and returns it with the URL from its first `listening on <url>` line.
pub fn spawn_listening(mut cmd: Command) -> Result<(Proc, String)> {
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

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
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
    if let Some(Sub::Scale) = args.command {
        let line = runtime.block_on(scale_only(&args))?;
        writeln!(std::io::stdout(), "{line}")?;
        return Ok(());
    }
    if let Some(Sub::Writer) = args.command {
        let line = runtime.block_on(writer::throughput(args.audit_events))?;
        writeln!(std::io::stdout(), "{line}")?;
        return Ok(());
    }
    runtime.block_on(run(args))
}

/// A process's environment variable: name, value.
type Env<'a> = (&'a str, &'a str);

/// The scale figure alone, on a `routero up` of its own in front of the fake provider.
async fn scale_only(args: &Args) -> Result<String> {
    let exe = std::env::current_exe()?;
    let bin_dir = exe.parent().context("bin dir")?;
    let mut fake_cmd = Command::new(bin_dir.join("routero-fake-provider"));
    fake_cmd.args(["--port", "0", "--no-record", "--api-key", UPSTREAM_KEY]);
    let (_fake, fake_url) = spawn_listening(fake_cmd)?;
    let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let loaded = start_up(
        &client,
        bin_dir,
        &fake_url,
        ("scale", Governs::default()),
        &[("ROUTERO_POLICIES_DIR", "")],
    )
    .await?;
    let line = scale::figures(
        &client,
        bin_dir,
        &loaded,
        args.tenants,
        args.keys_per_tenant,
    )
    .await;
    drop(loaded.process);
    let _ = std::fs::remove_dir_all(&loaded.dir);
    line
}

/// A row of the table: a measured target, or one that could not be (a peer not installed).
enum Row {
    Measured(Target, Measured),
    Missing(&'static str, String),
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
        .timeout(std::time::Duration::from_secs(60))
        .build()?;
    let policies = std::env::current_dir()?.join("policies");
    let policies = policies.to_string_lossy();
    let no_policies = [("ROUTERO_POLICIES_DIR", "")];
    let cached = [
        ("ROUTERO_POLICIES_DIR", &*policies),
        ("ROUTERO_POLICY_CACHE_SETTLE", "0s"),
    ];
    let plain = Governs::default();
    let up = start_up(&client, bin_dir, &fake_url, ("plain", plain), &no_policies).await?;
    // Decisions cached, and every decision asked of Cerbos (the cache never settles).
    let warm = start_up(&client, bin_dir, &fake_url, ("warm", plain), &cached).await?;
    let cold = start_up(
        &client,
        bin_dir,
        &fake_url,
        ("cold", plain),
        &[
            ("ROUTERO_POLICIES_DIR", &*policies),
            ("ROUTERO_POLICY_CACHE_SETTLE", "100000s"),
        ],
    )
    .await?;
    let guards = Governs {
        guardrails: true,
        ..plain
    };
    let guarded = start_up(&client, bin_dir, &fake_url, ("guarded", guards), &cached).await?;
    // A priced model and a key with a budget and rate limits, counted in the process and in
    // Redis (`ROUTERO_BENCH_REDIS_URL`, by default the local one `make test` starts).
    let budgets = Governs {
        budgets: true,
        ..plain
    };
    let metered = start_up(
        &client,
        bin_dir,
        &fake_url,
        ("metered", budgets),
        &no_policies,
    )
    .await?;
    let redis_url = std::env::var("ROUTERO_BENCH_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let redis = start_up(
        &client,
        bin_dir,
        &fake_url,
        ("redis", budgets),
        &[
            ("ROUTERO_POLICIES_DIR", ""),
            ("ROUTERO_REDIS_URL", &redis_url),
        ],
    )
    .await?;

    // Split data planes, one layer more each: authentication alone (and no audit events),
    // authorization with cached decisions (Cerbos as their sidecar, as in a deployment: its
    // CPU is not theirs), guardrails, then audit events emitted to Kafka.
    let sidecar_dir = up.dir.join("cerbos-sidecar");
    std::fs::create_dir_all(&sidecar_dir)?;
    let sidecar = routero_authz::Pdp::start(
        &routero_authz::find_cerbos(None)?,
        Path::new(&*policies),
        &sidecar_dir,
    )
    .await?;
    let cerbos_addr = format!("127.0.0.1:{}", sidecar.config().port);
    let authorized = [
        ("ROUTERO_CERBOS_ADDR", &*cerbos_addr),
        ("ROUTERO_POLICY_CACHE_SETTLE", "0s"),
    ];
    let broker = routero_testkit::broker::Tansu::start()?;
    let emitting = [
        ("ROUTERO_CERBOS_ADDR", &*cerbos_addr),
        ("ROUTERO_POLICY_CACHE_SETTLE", "0s"),
        ("ROUTERO_KAFKA_BROKERS", broker.address()),
    ];
    let sink = otlp_sink::start().await?;
    let metered_plane: Vec<Env> = emitting
        .iter()
        .copied()
        .chain([("ROUTERO_METRICS_ADDR", "127.0.0.1:0")])
        .collect();
    let traced_plane: Vec<Env> = emitting
        .iter()
        .copied()
        .chain([("ROUTERO_OTLP_ENDPOINT", sink.url.as_str())])
        .collect();
    let layers: [(&launch::Up, &'static str, &[Env]); 6] = [
        (&up, "data plane alone: authentication (no audit)", &[]),
        (
            &warm,
            "data plane alone: + authorization, decisions cached",
            &authorized,
        ),
        (
            &guarded,
            "data plane alone: + guardrails on 1 KiB in and out",
            &authorized,
        ),
        (
            &guarded,
            "data plane alone: + audit events emitted to Kafka (the whole data plane)",
            &emitting,
        ),
        (
            &guarded,
            "the whole data plane, metrics on (every answer read for its usage)",
            &metered_plane,
        ),
        (
            &guarded,
            "the whole data plane, every request traced (spans exported over OTLP)",
            &traced_plane,
        ),
    ];
    let mut split = Vec::new();
    for (following, name, env) in layers {
        split.push(following.data_plane(&client, bin_dir, name, env).await?);
    }
    let peers_dir = args.peers.clone().unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/routero/bench-peers")
    });
    let mut peers = Vec::new();
    for name in ["tensorzero", "litellm"] {
        peers.push(peers::start(&client, &peers_dir, name, &fake_url).await?);
    }

    let mut targets = vec![
        Ok(Target {
            name: "direct to provider",
            url: fake_url.clone(),
            key: UPSTREAM_KEY.into(),
            model: "fake-model",
            pid: None,
        }),
        Ok(Target {
            name: "bare hyper proxy",
            url: bare_url,
            key: UPSTREAM_KEY.into(),
            model: "fake-model",
            pid: Some(bare.0.id()),
        }),
    ];
    targets.extend(split.iter().map(|(_, target)| Ok(target.clone())));
    targets.extend([
        Ok(up.target("routero up: data plane + audit chain written")),
        Ok(warm.target("routero up + authorization (Cerbos), decisions cached")),
        Ok(guarded.target("routero up + authorization cached + guardrails on 1 KiB in and out")),
        Ok(cold.target("routero up + authorization, every decision asked of Cerbos")),
        Ok(up.target_of(
            "routero up, an Anthropic deployment (chat ↔ Messages translated)",
            "bench-claude",
        )),
        Ok(metered.target("routero up + price, budget and rate limits (in process)")),
        Ok(redis.target("routero up + price, budget and rate limits (Redis)")),
    ]);
    targets.extend(peers.iter().map(|peer| match peer {
        peers::Peer::Running { target, .. } => Ok(target.clone()),
        peers::Peer::Missing(name, why) => Err((*name, why.clone())),
    }));
    let mut rows = Vec::new();
    for target in targets {
        rows.push(match target {
            Ok(target) => {
                let measured = measure(&client, &target, args.requests, args.seconds)
                    .await
                    .with_context(|| target.name)?;
                Row::Measured(target, measured)
            }
            Err((name, why)) => Row::Missing(name, why),
        });
    }
    let direct = Target {
        name: "direct",
        url: fake_url.clone(),
        key: UPSTREAM_KEY.into(),
        model: "fake-model",
        pid: None,
    };
    let streams = [
        measure::first_events(&client, &direct, 500).await?,
        measure::first_events(&client, &guarded.target("guarded"), 500).await?,
    ];
    // The traced row measured what it claims only if its spans arrived.
    anyhow::ensure!(sink.spans() > 0, "the traced data plane exported no spans");
    drop(peers);
    drop(split);
    drop((broker, sidecar));
    let revocation = fleet::revocation(&client, &up, args.revocations).await?;
    let fanout = fleet::fanout(&client, bin_dir, &up, args.replicas, args.revocations).await?;
    let scim = scim::figures(
        &client,
        &up.admin_url,
        &up.data_url,
        args.scim_users,
        args.revocations,
    )
    .await?;
    let loaded = start_up(&client, bin_dir, &fake_url, ("scale", plain), &no_policies).await?;
    let scale = scale::figures(
        &client,
        bin_dir,
        &loaded,
        args.tenants,
        args.keys_per_tenant,
    )
    .await?;
    drop((fake, bare));
    for started in [up, warm, cold, guarded, metered, redis, loaded] {
        drop(started.process);
        let _ = std::fs::remove_dir_all(&started.dir);
    }
    let throughput = writer::throughput(args.audit_events).await?;

    let mut table = table(&rows);
    table.push_str(&format!(
        "\nStreaming, time to a stream's first event (500 streams one after another, 5 chunks each): direct p50 {:.0} µs; through `routero up` with authorization cached and guardrails p50 {:.0} µs, p99 {:.0} µs: {:.0} µs added at p50.\n",
        percentile(&streams[0], 0.5),
        percentile(&streams[1], 0.5),
        percentile(&streams[1], 0.99),
        percentile(&streams[1], 0.5) - percentile(&streams[0], 0.5),
    ));
    table.push_str(&revocation);
    table.push_str(&fanout.line());
    table.push_str(&scim);
    table.push_str(&scale);
    table.push_str(&throughput);
    writeln!(std::io::stdout(), "{table}")?;
    if let Some(path) = &args.readme {
        write_readme(path, &table)?;
    }
    Ok(())
}

/// The markdown table of `rows`: the first row is the provider called directly, the second
/// the bare proxy whose CPU the others are compared to.
fn table(rows: &[Row]) -> String {
    let figures = |row: &Row| match row {
        Row::Measured(_, m) => Some((m.p50_us, m.p99_us, m.cpu_us_per_request)),
        Row::Missing(..) => None,
    };
    let (direct_p50, direct_p99, _) = rows.first().and_then(figures).unwrap_or_default();
    let bare_cpu = rows.get(1).and_then(figures).and_then(|f| f.2);
    let mut table = String::from(
        "| target | CPU µs/request | × bare | requests/s (c=32) | p99 ms (c=32) | p50 µs (c=1) | added p50 µs | p99 µs (c=1) | added p99 µs | RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        match row {
            Row::Measured(target, m) => {
                let added = target.pid.is_some();
                let ratio = m.cpu_us_per_request.zip(bare_cpu).map(|(c, b)| c / b);
                table.push_str(&format!(
                    "| {} | {} | {} | {:.0} | {:.1} | {:.0} | {} | {:.0} | {} | {} |\n",
                    target.name,
                    fmt_opt(m.cpu_us_per_request, 1),
                    fmt_opt(ratio, 1),
                    m.rps,
                    m.p99_c32_ms,
                    m.p50_us,
                    fmt_opt(added.then_some(m.p50_us - direct_p50), 0),
                    m.p99_us,
                    fmt_opt(added.then_some(m.p99_us - direct_p99), 0),
                    fmt_opt(m.rss_mib, 1),
                ));
            }
            Row::Missing(name, why) => {
                table.push_str(&format!(
                    "| {name}: not measured ({why}) | – | – | – | – | – | – | – | – | – |\n"
                ));
            }
        }
    }
    table
}
