//! The peers measured beside Routero: TensorZero and LiteLLM, installed from PyPI into the
//! bench's own environments by `bench/peers/install.sh` and started by `bench/peers/serve.py`
//! in front of the same fake provider. A peer that is not installed is reported, not hidden.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::measure::{Target, call};
use crate::{Proc, free_port, spawn_listening};

/// A peer: running (its process and target), or why it is not measured.
pub enum Peer {
    /// Its process (killed when dropped) and how it is called.
    Running {
        _process: Proc,
        target: Target,
    },
    Missing(&'static str, String),
}

/// Starts `name` (`tensorzero` or `litellm`) from its environment under `dir`, waiting until it
/// answers a chat completion.
pub async fn start(
    client: &reqwest::Client,
    dir: &Path,
    name: &'static str,
    provider: &str,
) -> Result<Peer> {
    let (label, model) = match name {
        "tensorzero" => (
            "TensorZero 2026.6.0 (no auth, no audit)",
            "tensorzero::model_name::bench",
        ),
        _ => ("LiteLLM 1.106.12 proxy (1 worker)", "bench"),
    };
    let python = dir.join(name).join("bin/python");
    // install.sh stamps an environment once its install succeeded.
    let installed = std::fs::read_dir(dir.join(name))
        .into_iter()
        .flatten()
        .flatten()
        .any(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("installed-")
        });
    if !installed {
        let why = std::fs::read_to_string(dir.join(format!("{name}.failed")))
            .unwrap_or_else(|_| format!("not installed in {}", dir.display()));
        return Ok(Peer::Missing(label, one_line(&why)));
    }
    let log = dir.join(format!("{name}.out"));
    let failed = |what: &str| {
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = output.lines().rev().take(2).collect();
        Peer::Missing(label, one_line(&format!("{what}: {}", tail.join(" / "))))
    };
    let script = std::env::current_dir()?.join("bench/peers/serve.py");
    let mut command = Command::new(python);
    command
        .arg(script)
        .args([name, provider, &free_port()?.to_string()])
        .arg(&log);
    let Ok((process, url)) = spawn_listening(command) else {
        return Ok(failed("did not start"));
    };
    let target = Target {
        name: label,
        url,
        // LiteLLM's master key (bench/peers/serve.py); TensorZero asks for none.
        key: "sk-bench-litellm-master".into(),
        model,
        pid: Some(process.0.id()),
    };
    for _ in 0..1200 {
        if call(client, &target).await.is_ok() {
            return Ok(Peer::Running {
                _process: process,
                target,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(failed("never answered in 120 s"))
}

/// `text` on one line, for a table cell.
fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "/")
}
