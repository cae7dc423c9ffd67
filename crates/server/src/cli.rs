//! What every command line of canhbao shares: which deployment's settings it reads
//! ([`ConfigArgs`]), how they are loaded (with systemd's credential files), how an
//! administrative command says which deployment it acts on ([`deployment`]), and the log.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use tracing_subscriber::EnvFilter;

use crate::config;
use crate::{Settings, Sources};

/// Which deployment a command acts on. Global: they may follow any word of the command
/// (`canhbao receivers add --data-dir X ...` as well as `canhbao receivers --data-dir X add`).
#[derive(Args, Clone)]
pub struct ConfigArgs {
    /// The config directory (the systemd unit sets CANHBAO_CONFIG_DIR).
    #[arg(long, global = true, env = "CANHBAO_CONFIG_DIR", default_value = "config")]
    pub config_dir: PathBuf,
    /// The environment file to layer on the defaults (`production` reads production.toml).
    #[arg(long, global = true, env = "CANHBAO_ENV")]
    pub env: Option<String>,
    /// Where the database, signing key and admin token live.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
}

/// What only the running service takes: `canhbao serve`'s own flags.
#[derive(Args, Clone, Default)]
pub struct ServiceFlags {
    /// The HTTP API's listen address.
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// The embedded MQTT broker's listen address (loopback only).
    #[arg(long)]
    pub mqtt_listen: Option<SocketAddr>,
    /// Turn the demo feed off.
    #[arg(long)]
    pub no_demo: bool,
}

/// `canhbao serve`: the deployment, and the service's own flags.
#[derive(Args, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub service: ServiceFlags,
}

impl ServeArgs {
    pub fn sources(&self) -> Sources {
        let mut sources = self.config.sources();
        let flags = &mut sources.flags;
        if let Some(a) = self.service.http {
            flags.push(("http.listen".into(), toml::Value::String(a.to_string())));
        }
        if let Some(a) = self.service.mqtt_listen {
            flags.push(("mqtt.listen".into(), toml::Value::String(a.to_string())));
        }
        if self.service.no_demo {
            flags.push(("demo.enabled".into(), toml::Value::Boolean(false)));
        }
        sources
    }
}

impl ConfigArgs {
    pub fn sources(&self) -> Sources {
        let mut flags = Vec::new();
        if let Some(d) = &self.data_dir {
            flags.push((
                "service.data_dir".into(),
                toml::Value::String(d.display().to_string()),
            ));
        }
        Sources {
            config_dir: self.config_dir.clone(),
            env: self.env.clone(),
            vars: std::env::vars()
                .filter(|(k, _)| {
                    k.starts_with(config::ENV_PREFIX) || k.starts_with(crate::sms_config::SECRET_PREFIX)
                })
                .collect(),
            flags,
        }
    }
}

/// The log, on standard output: `RUST_LOG` filters it (default `info`, the embedded
/// broker and sqlx at `warn`). Colours only on a terminal, never into a file or journald;
/// one JSON object per line when `CANHBAO_LOG_FORMAT=json` (for a log shipper).
pub fn init_telemetry() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,rmqtt=warn,rmqtt_net=warn,rmqtt_codec=warn,rmqtt_utils=warn,sqlx=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match std::env::var(LOG_FORMAT_VAR).as_deref() {
        Ok("json") => builder.json().with_current_span(false).init(),
        Ok("text") | Err(_) => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init(),
        Ok(other) => {
            builder.with_ansi(false).init();
            tracing::warn!(
                value = other,
                "{LOG_FORMAT_VAR} must be text or json; logging text"
            );
        }
    }
}

/// `text` (the default) or `json`.
pub const LOG_FORMAT_VAR: &str = "CANHBAO_LOG_FORMAT";

pub fn load(args: &ConfigArgs) -> Result<Settings, config::Problems> {
    load_sources(args.sources())
}

/// The settings from `sources`, with the secrets of systemd's credential files.
pub fn load_sources(mut sources: Sources) -> Result<Settings, config::Problems> {
    // Secrets from files: systemd's LoadCredential= sets CREDENTIALS_DIRECTORY.
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let files = config::credential_vars(std::path::Path::new(&dir), &sources.vars)?;
        sources.vars.extend(files);
    }
    config::load(&sources)
}

/// The settings of the deployment an administrative command acts on, said on standard
/// error; or `None` after saying why it must not act (the problems with the settings, or
/// a database or keyring that does not exist: see `tools::existing_deployment`).
pub fn deployment(args: &ConfigArgs, needs_keyring: bool) -> Option<Settings> {
    let settings = load_or_report(args)?;
    match crate::tools::existing_deployment(
        &args.config_dir,
        args.env.as_deref(),
        &settings.database_url,
        &settings.data_dir,
        needs_keyring,
    ) {
        Ok(shown) => {
            eprintln!("canhbao: using {shown}");
            Some(settings)
        }
        Err(refusal) => {
            eprintln!("error: {refusal}");
            None
        }
    }
}

/// The settings, or `None` after printing every problem with them.
pub fn load_or_report(args: &ConfigArgs) -> Option<Settings> {
    match load(args) {
        Ok(s) => Some(s),
        Err(p) => {
            eprint!("{p}");
            None
        }
    }
}
