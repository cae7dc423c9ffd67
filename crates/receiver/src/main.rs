//! `canhbao-receiver`: the reference commune loudspeaker agent. It prints each verified
//! alert in Vietnamese and reports receipts.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use canhbao_receiver::{ReceiverConfig, ReceiverEvent, load_trusted_keys, render_vi, run};
use clap::Parser;
use dispatch::mqtt::BrokerUrl;
use dispatch::{Topics, TrustedKeys};
use domain::{CommuneCode, ProvinceCode, ReceiverId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "canhbao-receiver",
    version,
    about = "Reference commune loudspeaker receiver for canhbao"
)]
struct Cli {
    /// The MQTT broker.
    #[arg(long, default_value = "mqtt://127.0.0.1:1884")]
    broker: String,
    /// The commune code this receiver serves (5 digits).
    #[arg(long)]
    commune: String,
    /// This receiver's identity (letters, digits, - and _).
    #[arg(long)]
    id: String,
    /// Province code.
    #[arg(long, default_value = "20")]
    province: String,
    /// Topic prefix.
    #[arg(long, default_value = "canhbao/v1")]
    prefix: String,
    /// A JSON list of trusted public keys, as the service writes to
    /// DATA_DIR/signing-keys.pub.json. Provision it out of band.
    #[arg(long, default_value = "var/signing-keys.pub.json")]
    trusted_keys: PathBuf,
    /// An extra trusted key, as KEY_ID=BASE64 (repeatable).
    #[arg(long = "trusted-key")]
    trusted_key: Vec<String>,
    /// MQTT username, if the broker requires one.
    #[arg(long)]
    username: Option<String>,
    /// MQTT password; prefer the environment variable.
    #[arg(long, env = "CANHBAO_RECEIVER_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 30)]
    heartbeat_s: u64,
}

fn config(cli: Cli) -> Result<ReceiverConfig> {
    let mut keys = TrustedKeys::default();
    if cli.trusted_keys.exists() || cli.trusted_key.is_empty() {
        load_trusted_keys(&cli.trusted_keys, &mut keys)?;
    }
    for k in &cli.trusted_key {
        let (id, b64) = k
            .split_once('=')
            .with_context(|| format!("--trusted-key {k:?} must be KEY_ID=BASE64"))?;
        keys.add_base64(id, b64)?;
    }
    if keys.is_empty() {
        bail!("no trusted keys: give --trusted-keys FILE or --trusted-key KEY_ID=BASE64");
    }
    if cli.heartbeat_s == 0 {
        bail!("--heartbeat-s must be at least 1");
    }
    let province = ProvinceCode::new(&cli.province)?;
    Ok(ReceiverConfig {
        broker: BrokerUrl::parse(&cli.broker)?,
        receiver_id: ReceiverId::new(&cli.id)?,
        commune: CommuneCode::new(&cli.commune)?,
        topics: Topics::new(&cli.prefix, province)?,
        keys,
        username: cli.username,
        password: cli.password,
        heartbeat: Duration::from_secs(cli.heartbeat_s),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    let cfg = match config(Cli::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(receiver = %cfg.receiver_id, commune = %cfg.commune, keys = cfg.keys.len(),
        broker = %format!("{}:{}", cfg.broker.host, cfg.broker.port), "receiver starting");
    let shutdown = CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(cfg, tx, shutdown.clone()));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            ev = rx.recv() => match ev {
                Some(ReceiverEvent::Played(alert)) => println!("{}", render_vi(&alert)),
                Some(ReceiverEvent::Rejected { alert_id, reason }) => {
                    println!("!!! Từ chối tin {alert_id}: {reason}\n")
                }
                Some(ReceiverEvent::Connected) => tracing::info!("connected and subscribed"),
                None => break,
            },
        }
    }
    shutdown.cancel();
    let _ = task.await;
    ExitCode::SUCCESS
}
