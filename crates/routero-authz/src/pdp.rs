//! The Cerbos PDP as a child process (`routero up`, tests): the real binary, on loopback ports,
//! reading the policy directory and reloading it when it changes. Killed when dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::{AuthzConfig, AuthzError};

/// Finds the `cerbos` binary: `configured`, else `cerbos` on PATH, else
/// `$ROUTERO_CACHE/bin/cerbos` (or `~/.cache/routero/bin/cerbos`), where `make` installs it.
pub fn find_cerbos(configured: Option<&Path>) -> Result<PathBuf, AuthzError> {
    if let Some(path) = configured {
        return if path.is_file() {
            Ok(path.to_owned())
        } else {
            Err(AuthzError::Pdp(format!("{} is not a file", path.display())))
        };
    }
    let on_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("cerbos"))
                .collect()
        })
        .unwrap_or_default();
    let cache = std::env::var_os("ROUTERO_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/routero")));
    on_path
        .into_iter()
        .chain(cache.map(|dir| dir.join("bin/cerbos")))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            AuthzError::Pdp(
                "no cerbos binary: set cerbos_binary, put cerbos on PATH, or run `make setup`"
                    .into(),
            )
        })
}

/// A running Cerbos PDP.
#[derive(Debug)]
pub struct Pdp {
    child: Child,
    binary: PathBuf,
    work_dir: PathBuf,
    grpc_port: u16,
}

fn pdp_error(what: &str, e: std::io::Error) -> AuthzError {
    AuthzError::Pdp(format!("{what}: {e}"))
}

/// Starts the binary on the config in `work_dir` and waits until its gRPC port answers.
async fn spawn(binary: &Path, work_dir: &Path, grpc_port: u16) -> Result<Child, AuthzError> {
    let log = routero_files::append_private(&work_dir.join("cerbos.log"))
        .map_err(|e| pdp_error("opening its log", e))?;
    let log_err = log
        .try_clone()
        .map_err(|e| pdp_error("opening its log", e))?;
    let mut child = Command::new(binary)
        .arg("server")
        .arg(format!(
            "--config={}",
            work_dir.join("cerbos.yaml").display()
        ))
        .current_dir(work_dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| pdp_error(&format!("starting {}", binary.display()), e))?;
    for _ in 0..300 {
        if let Some(status) = child.try_wait().map_err(|e| pdp_error("waiting", e))? {
            return Err(AuthzError::Pdp(format!(
                "exited with {status}; see {}",
                work_dir.join("cerbos.log").display()
            )));
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", grpc_port))
            .await
            .is_ok()
        {
            return Ok(child);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(AuthzError::Pdp("not ready after 15 s".into()))
}

fn free_port() -> Result<u16, AuthzError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| AuthzError::Pdp(format!("no free port: {e}")))
}

impl Pdp {
    /// Starts `binary` serving the policies in `policies`, its config and log in `work_dir`,
    /// and waits until its gRPC port answers.
    pub async fn start(
        binary: &Path,
        policies: &Path,
        work_dir: &Path,
    ) -> Result<Self, AuthzError> {
        let policies = std::fs::canonicalize(policies).map_err(|source| AuthzError::Bundle {
            path: policies.display().to_string(),
            source,
        })?;
        // Absolute, because the child runs inside `work_dir`: a relative path given by the
        // caller (`./data/cerbos` under `make run`) would not exist from there.
        let work_dir = &std::path::absolute(work_dir).map_err(|e| pdp_error("its directory", e))?;
        let (http_port, grpc_port) = (free_port()?, free_port()?);
        let config = format!(
            "server:\n  httpListenAddr: \"127.0.0.1:{http_port}\"\n  grpcListenAddr: \"127.0.0.1:{grpc_port}\"\n\
             storage:\n  driver: disk\n  disk:\n    directory: {policies:?}\n    watchForChanges: true\n\
             telemetry:\n  disabled: true\n",
        );
        let config_path = work_dir.join("cerbos.yaml");
        routero_files::write_private(&config_path, config.as_bytes())
            .map_err(|e| pdp_error("writing its config", e))?;
        let child = spawn(binary, work_dir, grpc_port).await?;
        tracing::info!(grpc_port, policies = %policies.display(), "cerbos ready");
        Ok(Self {
            child,
            binary: binary.to_owned(),
            work_dir: work_dir.to_owned(),
            grpc_port,
        })
    }

    /// Kills it (as a crash would); [`Pdp::restart`] brings it back on the same ports.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Starts it again with the same configuration, if it is not running.
    pub async fn restart(&mut self) -> Result<(), AuthzError> {
        if self
            .child
            .try_wait()
            .map_err(|e| pdp_error("waiting", e))?
            .is_some()
        {
            self.child = spawn(&self.binary, &self.work_dir, self.grpc_port).await?;
        }
        Ok(())
    }

    /// How to reach it.
    pub fn config(&self) -> AuthzConfig {
        AuthzConfig::new("127.0.0.1", self.grpc_port)
    }
}
