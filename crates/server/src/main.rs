//! `canhbao`: the disaster-warning dissemination service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use canhbao_server::config::{self, MqttMode, Sources};
use canhbao_server::{App, Settings};
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "canhbao",
    version,
    about = "Disaster-warning dissemination for Vietnamese provinces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (embedded default: SQLite, in-process broker, demo feed).
    Serve(ConfigArgs),
    /// Load and validate the settings, reporting every problem at once.
    CheckConfig(ConfigArgs),
}

#[derive(Args, Clone)]
struct ConfigArgs {
    /// The config directory.
    #[arg(long, default_value = "config")]
    config_dir: PathBuf,
    /// The environment file to layer on the defaults (`production` reads production.toml).
    #[arg(long, env = "CANHBAO_ENV")]
    env: Option<String>,
    /// Where the database, signing key and admin token live.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The HTTP API's listen address.
    #[arg(long)]
    http: Option<SocketAddr>,
    /// The embedded MQTT broker's listen address (loopback only).
    #[arg(long)]
    mqtt_listen: Option<SocketAddr>,
    /// Turn the demo feed off.
    #[arg(long)]
    no_demo: bool,
}

impl ConfigArgs {
    fn sources(&self) -> Sources {
        let mut flags = Vec::new();
        if let Some(d) = &self.data_dir {
            flags.push((
                "service.data_dir".into(),
                toml::Value::String(d.display().to_string()),
            ));
        }
        if let Some(a) = self.http {
            flags.push(("http.listen".into(), toml::Value::String(a.to_string())));
        }
        if let Some(a) = self.mqtt_listen {
            flags.push(("mqtt.listen".into(), toml::Value::String(a.to_string())));
        }
        if self.no_demo {
            flags.push(("demo.enabled".into(), toml::Value::Boolean(false)));
        }
        Sources {
            config_dir: self.config_dir.clone(),
            env: self.env.clone(),
            vars: std::env::vars()
                .filter(|(k, _)| k.starts_with(config::ENV_PREFIX))
                .collect(),
            flags,
        }
    }
}

fn init_telemetry() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,rmqtt=warn,rmqtt_net=warn,rmqtt_codec=warn,rmqtt_utils=warn,sqlx=warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

fn load(args: &ConfigArgs) -> Result<Settings, config::Problems> {
    config::load(&args.sources())
}

async fn serve(args: ConfigArgs) -> Result<ExitCode> {
    let settings = match load(&args) {
        Ok(s) => s,
        Err(problems) => {
            eprint!("{problems}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let app = App::start(settings).await?;
    let stop = app.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        stop.cancel();
    });
    app.run_until_stopped().await;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                _ = term.recv() => tracing::info!("SIGTERM received"),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the service");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn check_config(args: ConfigArgs) -> ExitCode {
    match load(&args) {
        Ok(s) => {
            let provisional_levels = s
                .area
                .stations
                .iter()
                .flat_map(|st| [st.bd1_m, st.bd2_m, st.bd3_m])
                .flatten()
                .filter(|l| l.tag.is_provisional())
                .count();
            let broker = match &s.mqtt.mode {
                MqttMode::Embedded { listen } => format!("embedded on {listen}"),
                MqttMode::External { url } => format!("external mqtt://{}:{}", url.host, url.port),
            };
            println!("configuration OK");
            println!("  profile        {:?}", s.profile);
            println!("  province       {}", s.province);
            println!("  data dir       {}", s.data_dir.display());
            println!("  http           {}", s.http_listen);
            println!("  broker         {broker}");
            println!(
                "  demo           {}",
                if s.demo_interval.is_some() { "on" } else { "off" }
            );
            println!("  communes       {}", s.area.communes.len());
            println!(
                "  stations       {} ({} alarm levels provisional, {} station-to-commune mappings provisional)",
                s.area.stations.len(),
                provisional_levels,
                s.area
                    .stations
                    .iter()
                    .filter(|st| st.communes_provisional.is_some())
                    .count()
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprint!("{problems}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig(args) => check_config(args),
        Command::Serve(args) => {
            init_telemetry();
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(args)) {
                Ok(code) => code,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "canhbao failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
