//! Runs the fake provider: `routero-fake-provider --port 0` prints `listening on http://…`.

use std::io::Write;

use clap::Parser;
use routero_testkit::FakeConfig;

#[derive(Parser)]
#[command(about = "A fake OpenAI-compatible provider for tests and benchmarks")]
struct Args {
    /// Port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Bearer token to require.
    #[arg(long)]
    api_key: Option<String>,
    /// Chunks per streamed reply.
    #[arg(long, default_value_t = 5)]
    chunks: usize,
    /// Milliseconds between streamed chunks.
    #[arg(long, default_value_t = 0)]
    chunk_interval_ms: u64,
    /// Milliseconds before each answer.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Do not record requests (for benchmarks).
    #[arg(long)]
    no_record: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    let addr = listener.local_addr()?;
    writeln!(std::io::stdout(), "listening on http://{addr}")?;
    std::io::stdout().flush()?;
    let config = FakeConfig {
        api_key: args.api_key,
        chunks: args.chunks,
        chunk_interval_ms: args.chunk_interval_ms,
        latency_ms: args.latency_ms,
        record: !args.no_record,
        ..FakeConfig::default()
    };
    routero_testkit::serve(listener, config).await?;
    Ok(())
}
