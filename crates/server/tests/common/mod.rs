//! What the tests that run `canhbao serve` as a child process share.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use canhbao_server::bench_dispatch::province_bulletin;

/// The sender made authoritative in these tests' services.
pub const SENDER: &str = "kttv-langson@example.vn";

/// The service as a child process, killed when the test ends.
pub struct Service(pub Child);

impl Service {
    /// SIGKILL: no grace, no cleanup, as a power cut or the OOM killer would.
    pub fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The last lines of the service's log, newest first.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(40).collect();
    lines.join("\n")
}

/// Starts `canhbao serve` on the repository's config with `env`, appending its output to
/// `log`.
pub fn spawn_service(log: &Path, env: &[(&str, String)]) -> Service {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_canhbao"));
    command
        .arg("serve")
        .arg("--config-dir")
        .arg(repo().join("config"))
        .env("CANHBAO__DEMO__ENABLED", "false")
        .env(
            "CANHBAO__BULLETINS__AUTHORITATIVE_SENDERS",
            format!(r#"["{SENDER}"]"#),
        )
        .env("RUST_LOG", "info")
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    for (k, v) in env {
        command.env(k, v);
    }
    Service(command.spawn().unwrap())
}

pub async fn wait_ready(http: &reqwest::Client, base: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Ready, and canhbao's answer (not another program that took the port).
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
            && r.json::<serde_json::Value>()
                .await
                .is_ok_and(|v| v["database"] == "ok")
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the service did not become ready: {}",
            tail(log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A CAP bulletin from the authoritative sender for the whole province.
pub fn bulletin(identifier: &str, hazard: &str, level: u8) -> String {
    let settings = canhbao_server::config::load(&canhbao_server::Sources {
        config_dir: repo().join("config"),
        ..Default::default()
    })
    .unwrap();
    province_bulletin(identifier, SENDER, hazard, level, "Actual", &settings)
}
