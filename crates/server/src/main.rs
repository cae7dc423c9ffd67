//! `canhbao`: the disaster-warning dissemination service.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use canhbao_server::cli::{ConfigArgs, ServeArgs, deployment, init_telemetry, load, load_sources};
use canhbao_server::config::{self, MqttMode};
use canhbao_server::{App, Settings};
use clap::{Args, Parser, Subcommand};

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
    Serve(ServeArgs),
    /// Load and validate the settings, reporting every problem at once.
    CheckConfig(ConfigArgs),
    /// Validate rule files and run their examples; print a summary per hazard.
    CheckRules {
        /// The rules directory (default: config/rules, or the built-in rules).
        dir: Option<PathBuf>,
    },
    /// Run the rules over historical observations with a simulated clock.
    Replay(ReplayArgs),
    /// Which communes the rules can give a level to, hazard by hazard, from the
    /// configuration, and what is missing where they cannot.
    Coverage(CoverageArgs),
    /// Run a feed parser on a file: print what would be accepted as JSON lines, and every
    /// rejection; exit non-zero if the file is rejected as a whole.
    IngestFile {
        /// cap, atom, rss, nws, station-json, station-csv, open-meteo, open-meteo-flood,
        /// usgs-ogc or usgs-iv.
        #[arg(long)]
        format: String,
        file: PathBuf,
        /// Open-Meteo and USGS: tie the feed's points to stations as this configured
        /// source does.
        #[arg(long)]
        source: Option<String>,
        /// Open-Meteo and USGS: tie a point to a station, `POINT=STATION` or
        /// `POINT=STATION@OFFSET_M` (repeatable).
        #[arg(long = "point")]
        points: Vec<String>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Create an API token and print it once (it is stored only as a hash).
    TokenCreate {
        /// admin, station or viewer.
        #[arg(long)]
        role: String,
        /// Whose token it is.
        #[arg(long)]
        label: String,
        /// For a station token: a station it may write for (repeatable).
        #[arg(long = "station")]
        stations: Vec<String>,
        /// What it may do: observations, bulletins, read (repeatable; default by role: a
        /// station key writes observations and reads).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Signing keys: generate, list, activate or retire (rotation; takes effect on restart).
    Keys {
        #[command(subcommand)]
        action: KeysCli,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// The SMS contact directory.
    Contacts {
        #[command(subcommand)]
        action: ContactsAction,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// People who log in: add, list, disable, reset-password.
    Users {
        #[command(subcommand)]
        action: UsersAction,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// The receiver registry: add, list or remove loudspeaker receivers.
    Receivers {
        #[command(subcommand)]
        action: ReceiversAction,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Write Mosquitto's password file (DIR/passwd) and ACL (DIR/acl) for the registered
    /// receivers and the service, and print the mosquitto.conf lines that use them.
    MosquittoConfig {
        /// The directory for passwd and acl (created if missing; the files are replaced).
        #[arg(long)]
        out: PathBuf,
        /// A file holding the service's broker password (default: [mqtt] password, else
        /// DATA_DIR/mqtt-service.password, made on first use).
        #[arg(long)]
        service_password_file: Option<PathBuf>,
        /// Write an ACL without receivers over one that has some (otherwise refused: a
        /// reload would lock every receiver out).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Args)]
struct ReplayArgs {
    /// A CSV or JSON file of observations, or a directory of them.
    path: PathBuf,
    /// Output format: text or json.
    #[arg(long, default_value = "text")]
    format: String,
    /// Assume an Art. 45 area class for a station, as STATION=N (repeatable).
    #[arg(long = "area-class")]
    area_class: Vec<String>,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Args)]
struct CoverageArgs {
    /// Output format: text or json.
    #[arg(long, default_value = "text")]
    format: String,
    /// Assume an Art. 45 area class for a station, as STATION=N (repeatable): what
    /// setting it would cover.
    #[arg(long = "area-class")]
    area_class: Vec<String>,
    #[command(flatten)]
    config: ConfigArgs,
}

async fn serve(args: ServeArgs) -> Result<ExitCode> {
    let settings = match load_sources(args.sources()) {
        Ok(s) => s,
        Err(problems) => {
            eprint!("{problems}");
            return Ok(ExitCode::FAILURE);
        }
    };
    canhbao_server::app::raise_open_files_limit(matches!(
        settings.mqtt.mode,
        canhbao_server::config::MqttMode::Embedded { .. }
    ));
    // Every file the service makes (the database and its journal, keys, tokens) is for
    // its own user alone.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
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
                MqttMode::External { url, fallback } => format!(
                    "external mqtt://{}:{}{}",
                    url.host,
                    url.port,
                    fallback
                        .as_ref()
                        .map(|f| format!(", falling back to mqtt://{}:{}", f.host, f.port))
                        .unwrap_or_default()
                ),
            };
            if let Some(tls) = &s.http.tls
                && let Err(e) = canhbao_server::http::check_tls_files(tls)
            {
                eprintln!("http.tls_cert_file / http.tls_key_file: {e:#}");
                return ExitCode::FAILURE;
            }
            println!("configuration OK");
            println!("  profile        {:?}", s.profile);
            println!("  province       {}", s.province);
            println!("  data dir       {}", s.data_dir.display());
            println!(
                "  http           {} ({})",
                s.http_listen,
                match &s.http.tls {
                    Some(t) => format!("HTTPS, certificate {}", t.cert_file.display()),
                    None => "plain HTTP".to_owned(),
                }
            );
            if s.http.in_clear_on(s.http_listen) {
                eprintln!(
                    "WARNING: the API listens in plain HTTP on {}, an address other than loopback: \
                     passwords, tokens and SMS callback secrets would cross the network in clear. \
                     Set [http] tls_cert_file and tls_key_file, or listen on 127.0.0.1 behind a TLS \
                     reverse proxy (docs/operations.md, \"HTTPS\").",
                    s.http_listen
                );
            }
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
            let gateways: Vec<&str> = s.sms.gateways.iter().map(|g| g.id.as_str()).collect();
            println!(
                "  sms            {}",
                if gateways.is_empty() {
                    "off (no gateway in [sms])".to_owned()
                } else {
                    format!("gateways {} (failover in this order)", gateways.join(", "))
                }
            );
            let a = &s.approval;
            println!(
                "  approval       {}",
                if a.enabled {
                    let classes: Vec<&str> = a.classes.iter().map(|c| c.code()).collect();
                    format!(
                        "two-person rule from risk level {} and for class {}",
                        a.min_level,
                        classes.join(", ")
                    )
                } else {
                    "off: every officer issues alone".to_owned()
                }
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprint!("{problems}");
            ExitCode::FAILURE
        }
    }
}

fn check_rules(dir: Option<PathBuf>) -> ExitCode {
    let files = match dir {
        Some(d) => config::read_rule_dir(&d),
        None => {
            let dir = PathBuf::from("config");
            config::rule_files(&dir, "rules", dir.is_dir())
        }
    };
    let files = match files {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rules::load(&files) {
        Ok(set) => {
            println!("{} rule files, {} rules", files.len(), set.rules.len());
            let _ = canhbao_server::tools::print_summary(&set, &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `--format text|json`: whether it is JSON.
fn json_format(format: &str) -> Result<bool> {
    match format {
        "text" => Ok(false),
        "json" => Ok(true),
        other => anyhow::bail!("--format {other:?} must be text or json"),
    }
}

/// `--area-class STATION=N` arguments.
fn area_classes(args: &[String]) -> Result<Vec<(String, u8)>> {
    let mut classes = Vec::new();
    for a in args {
        let (id, n) = a
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--area-class {a:?} must be STATION=N"))?;
        classes.push((
            id.to_owned(),
            n.parse::<u8>()
                .map_err(|_| anyhow::anyhow!("--area-class {a:?}: N must be 1 to 4"))?,
        ));
    }
    Ok(classes)
}

fn coverage(args: CoverageArgs) -> Result<ExitCode> {
    let settings = match load(&args.config) {
        Ok(s) => s,
        Err(p) => {
            eprint!("{p}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let json = json_format(&args.format)?;
    let inputs = canhbao_server::tools::inputs_for(&settings.area, &area_classes(&args.area_class)?)?;
    canhbao_server::tools::write_coverage(
        &settings.rules,
        &inputs,
        &settings.area,
        json,
        &mut std::io::stdout().lock(),
    )?;
    Ok(ExitCode::SUCCESS)
}

fn replay(args: ReplayArgs) -> Result<ExitCode> {
    let settings = match load(&args.config) {
        Ok(s) => s,
        Err(p) => {
            eprint!("{p}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let json = json_format(&args.format)?;
    let inputs = canhbao_server::tools::inputs_for(&settings.area, &area_classes(&args.area_class)?)?;
    let history = canhbao_server::tools::read_history(&args.path)?;
    canhbao_server::tools::run_replay(
        &settings.rules,
        &inputs,
        history,
        canhbao_server::tools::follow_replay(&settings.alerts),
        json,
        &mut std::io::stdout().lock(),
    )?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
enum UsersAction {
    /// Add a person with a role (viewer, officer, approver, admin). The password is
    /// generated and shown once, unless --password-stdin reads one (at least 12 characters).
    Add {
        username: String,
        #[arg(long)]
        role: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Every user with role, state and last login.
    List,
    /// Disable a user and revoke their tokens.
    Disable { username: String },
    /// Set a new password (generated and shown once, or from --password-stdin); revokes the
    /// user's tokens and lifts a lockout.
    ResetPassword {
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

fn read_password(from_stdin: bool) -> Result<Option<String>> {
    if !from_stdin {
        return Ok(None);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_owned()))
}

fn users(action: UsersAction, args: &ConfigArgs) -> Result<ExitCode> {
    use canhbao_server::users;
    let done = with_store(args, async |settings, store| {
        match action {
            UsersAction::Add {
                username,
                role,
                password_stdin,
            } => {
                let given = read_password(password_stdin)?;
                let generated = given.is_none();
                let password = users::add(store, &settings.data_dir, &username, &role, given).await?;
                println!("user {username} added with role {role}");
                if generated {
                    println!("password (shown once): {password}");
                }
            }
            UsersAction::List => {
                for line in users::list(store).await? {
                    println!("{line}");
                }
            }
            UsersAction::Disable { username } => {
                users::disable(store, &username).await?;
                println!("user {username} disabled; their tokens are revoked");
            }
            UsersAction::ResetPassword {
                username,
                password_stdin,
            } => {
                let given = read_password(password_stdin)?;
                let generated = given.is_none();
                let password = users::reset_password(store, &username, given).await?;
                println!("password of {username} reset; their tokens are revoked");
                if generated {
                    println!("password (shown once): {password}");
                }
            }
        }
        Ok(())
    })?;
    Ok(done.map_or(ExitCode::FAILURE, |()| ExitCode::SUCCESS))
}

#[derive(Subcommand)]
enum ContactsAction {
    /// Import a CSV directory (name,phone,commune,role[,language,opt_out]); the whole
    /// file or nothing, with every bad row named.
    Import { file: PathBuf },
}

fn contacts(action: ContactsAction, args: &ConfigArgs) -> Result<ExitCode> {
    let Some(settings) = deployment(args, false) else {
        return Ok(ExitCode::FAILURE);
    };
    let ContactsAction::Import { file } = action;
    let text =
        std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
    let communes: Vec<domain::CommuneCode> = settings.area.communes.iter().map(|c| c.code.clone()).collect();
    let parsed = match ingest::contacts::parse_csv(&text, &communes) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors {
                eprintln!("{}: {}", e.field, e.detail);
            }
            eprintln!("{} rejected rows; nothing was imported", errors.len());
            return Ok(ExitCode::FAILURE);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let done = runtime.block_on(async {
        std::fs::create_dir_all(&settings.data_dir)?;
        let store = store::Store::open(&settings.database_url).await?;
        let done = ingest::directory::import_contacts(&store, &parsed, chrono::Utc::now(), |n, total| {
            let width = 30;
            let filled = n * width / total.max(1);
            eprint!(
                "\rimporting [{}{}] {n}/{total}",
                "#".repeat(filled),
                " ".repeat(width - filled)
            );
        })
        .await;
        store.close().await;
        anyhow::Ok(done?)
    })?;
    eprintln!();
    println!(
        "{} contacts imported: {} new, {} updated",
        parsed.len(),
        done.added,
        done.updated
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
enum KeysCli {
    /// Add a key. It is published for receivers but does not sign until activated, so
    /// that receivers can be given it first; `--activate` makes it sign at once.
    Generate {
        #[arg(long)]
        activate: bool,
    },
    /// List every key with its state (active, valid, retired).
    List,
    /// Make a valid key the one that signs; the previous one stays valid.
    Activate { key_id: String },
    /// Revoke a key that no longer signs: receivers stop trusting it (and drop what it
    /// signed), and its secret is deleted. Refused while an alert it signed is live,
    /// unless --force (a stolen key).
    Retire {
        key_id: String,
        /// Retire it even though alerts it signed are live: receivers drop them.
        #[arg(long)]
        force: bool,
    },
}

/// Whether no live alert was signed by `key_id`; otherwise says which are, and until when.
fn retire_is_safe(key_id: &str, settings: &Settings) -> Result<bool> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let live = runtime.block_on(async {
        let store = store::Store::open(&settings.database_url).await?;
        let live = store.live_alerts_signed_by(key_id, chrono::Utc::now()).await;
        store.close().await;
        anyhow::Ok(live?)
    })?;
    let Some((_, last)) = live.last() else {
        return Ok(true);
    };
    eprintln!(
        "error: {} live alert(s) are signed by {key_id}; retiring it now would make every \
         receiver drop them. The last expires at {}. Retire it after that, or with --force if \
         the key was stolen:",
        live.len(),
        last.to_rfc3339()
    );
    for (id, expires) in live.iter().take(20) {
        eprintln!("  {id} (expires {})", expires.to_rfc3339());
    }
    Ok(false)
}

fn keys(action: KeysCli, args: &ConfigArgs) -> Result<ExitCode> {
    let Some(settings) = deployment(args, true) else {
        return Ok(ExitCode::FAILURE);
    };
    use canhbao_server::keyring::{KeysAction, run_keys};
    let action = match action {
        KeysCli::Generate { activate } => KeysAction::Generate { activate },
        KeysCli::List => KeysAction::List,
        KeysCli::Activate { key_id } => KeysAction::Activate(key_id),
        KeysCli::Retire { key_id, force } => {
            if !force && !retire_is_safe(&key_id, &settings)? {
                return Ok(ExitCode::FAILURE);
            }
            KeysAction::Retire(key_id)
        }
    };
    run_keys(
        &action,
        &settings.data_dir,
        &settings.signing_key_file,
        settings.province.as_str(),
        chrono::Utc::now(),
        &mut std::io::stdout().lock(),
    )?;
    eprintln!(
        "the key set for receivers is signed: a running service publishes it within 2 seconds \
         (protocol §10a); it signs alerts with the key that was active when it started: restart it \
         after `keys activate` or `keys generate --activate`, before retiring the old key"
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
enum ReceiversAction {
    /// Register a receiver for a commune.
    Add {
        #[arg(long)]
        id: String,
        #[arg(long)]
        commune: String,
        #[arg(long)]
        firmware: Option<String>,
        /// A signing key id the receiver trusts (repeatable).
        #[arg(long = "trusted-key")]
        trusted_keys: Vec<String>,
        /// Enrolled for drills: Exercise and Test alerts are expected of it (start the
        /// receiver with `--drills` too).
        #[arg(long)]
        drills: bool,
    },
    /// List registered receivers with their health.
    List,
    /// Remove a receiver from the registry (its history stays).
    Remove {
        #[arg(long)]
        id: String,
    },
}

fn receivers(action: ReceiversAction, args: &ConfigArgs) -> Result<ExitCode> {
    let done = with_store(args, async |settings, store| {
        let out = &mut std::io::stdout().lock();
        match action {
            ReceiversAction::Add {
                id,
                commune,
                firmware,
                trusted_keys,
                drills,
            } => {
                let communes: Vec<domain::CommuneCode> =
                    settings.area.communes.iter().map(|c| c.code.clone()).collect();
                canhbao_server::tools::receivers_add(
                    store,
                    &communes,
                    &id,
                    &commune,
                    firmware,
                    trusted_keys,
                    drills,
                    out,
                    &mut std::io::stderr(),
                )
                .await
            }
            ReceiversAction::List => canhbao_server::tools::receivers_list(store, out).await,
            ReceiversAction::Remove { id } => canhbao_server::tools::receivers_remove(store, &id, out).await,
        }
    })?;
    Ok(done.map_or(ExitCode::FAILURE, |()| ExitCode::SUCCESS))
}

/// Runs `f` on the configured database, offline, for a command: `None` when the settings
/// are refused (every problem already reported).
fn with_store<T>(
    args: &ConfigArgs,
    f: impl AsyncFnOnce(&Settings, &store::Store) -> Result<T>,
) -> Result<Option<T>> {
    let Some(settings) = deployment(args, false) else {
        return Ok(None);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        std::fs::create_dir_all(&settings.data_dir)?;
        let store = store::Store::open(&settings.database_url).await?;
        let out = f(&settings, &store).await;
        store.close().await;
        out.map(Some)
    })
}

fn mosquitto_config(
    dir: &std::path::Path,
    password_file: Option<&std::path::Path>,
    force: bool,
    args: &ConfigArgs,
) -> Result<ExitCode> {
    use canhbao_server::mosquitto::{self, AclLayout, PasswordSource, ServiceAccount};
    let Some(settings) = deployment(args, false) else {
        return Ok(ExitCode::FAILURE);
    };
    let layout = AclLayout::new(&settings.mqtt.topic_prefix, settings.province.clone())?;
    let username = mosquitto::service_username(settings.mqtt.username.as_deref())?;
    std::fs::create_dir_all(&settings.data_dir)?;
    let (password, source) = mosquitto::service_password(
        password_file,
        settings
            .mqtt
            .password
            .as_ref()
            .map(secrecy::ExposeSecret::expose_secret),
        &settings.data_dir,
    )?;
    let service = ServiceAccount::new(&username, &password)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let written = runtime.block_on(async {
        let store = store::Store::open(&settings.database_url).await?;
        let receivers = store
            .receiver_logins()
            .await?
            .iter()
            .filter(|(_, _, hash)| hash.is_some())
            .count();
        let live = std::fs::read_to_string(dir.join("acl"))
            .map(|text| mosquitto::receivers_in_acl(&text, &username))
            .unwrap_or(0);
        if receivers == 0 && live > 0 && !force {
            store.close().await;
            anyhow::bail!(
                "this database registers no receiver with a broker password, but {}/acl grants {live}: \
                 writing it would lock them out at the next reload. Is this the deployment you mean? \
                 (--force writes it anyway)",
                dir.display()
            );
        }
        let written = mosquitto::write_config(&store, &layout, &service, dir).await;
        store.close().await;
        written
    })?;
    for s in &written.skipped {
        eprintln!("warning: left out: {s}");
    }
    eprintln!(
        "wrote {0}/passwd and {0}/acl: {1} receivers and the service's user {username:?}",
        written.dir.display(),
        written.receivers
    );
    match &source {
        PasswordSource::File(p) => eprintln!("the service's password is the one in {}", p.display()),
        PasswordSource::Settings => {
            eprintln!("the service's password is [mqtt] password (CANHBAO__MQTT__PASSWORD)")
        }
        PasswordSource::Kept(p) | PasswordSource::Created(p) => {
            let made = if matches!(source, PasswordSource::Created(_)) {
                "new, "
            } else {
                ""
            };
            eprintln!(
                "the service's password is in {} ({made}mode 0600): set CANHBAO__MQTT__PASSWORD to it",
                p.display()
            );
        }
    }
    if settings.mqtt.username.is_none() {
        eprintln!(
            "set [mqtt] username = {username:?} (CANHBAO__MQTT__USERNAME) so that canhbao logs in as that user"
        );
    }
    eprintln!("Mosquitto must be able to read both files; reload it (SIGHUP) to apply them");
    let port = match &settings.mqtt.mode {
        MqttMode::External { url, .. } => url.port,
        MqttMode::Embedded { .. } => 1883,
    };
    print!("{}", mosquitto::conf_snippet(&written.dir, &port.to_string()));
    Ok(ExitCode::SUCCESS)
}

fn token_create(
    role: &str,
    label: &str,
    stations: &[String],
    scopes: &[String],
    args: &ConfigArgs,
) -> Result<ExitCode> {
    let Some(settings) = deployment(args, false) else {
        return Ok(ExitCode::FAILURE);
    };
    for s in stations {
        if !settings.area.stations.iter().any(|st| st.id.as_str() == s) {
            anyhow::bail!("--station {s:?} is not in the area file");
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let token = runtime.block_on(async {
        std::fs::create_dir_all(&settings.data_dir)?;
        let store = store::Store::open(&settings.database_url).await?;
        let token = canhbao_server::secrets::create_token(&store, role, label, stations, scopes).await;
        store.close().await;
        token
    })?;
    println!("{token}");
    eprintln!("this is the only time the token is shown; it is stored as a hash");
    Ok(ExitCode::SUCCESS)
}

fn ingest_file(
    format: &str,
    file: &std::path::Path,
    source: Option<&str>,
    points: &[String],
    args: &ConfigArgs,
) -> Result<ExitCode> {
    let Some(settings) = deployment(args, false) else {
        return Ok(ExitCode::FAILURE);
    };
    let mut map = match source {
        Some(id) => {
            let src = settings
                .poll
                .sources
                .iter()
                .find(|s| s.id == id)
                .ok_or_else(|| anyhow::anyhow!("no source {id:?} in [ingest] sources"))?;
            Some((*src.points).clone())
        }
        None => None,
    };
    for p in points {
        let (point, target) = canhbao_server::tools::parse_point(p)?;
        map.get_or_insert_with(Default::default).0.insert(point, target);
    }
    let bytes = std::fs::read(file).map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
    let accepted = canhbao_server::tools::ingest_file(
        format,
        &bytes,
        &settings,
        map.as_ref(),
        chrono::Utc::now(),
        &mut std::io::stdout().lock(),
    )?;
    Ok(if accepted {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn report(result: Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig(args) => check_config(args),
        Command::CheckRules { dir } => check_rules(dir),
        Command::Replay(args) => report(replay(args)),
        Command::Coverage(args) => report(coverage(args)),
        Command::Receivers { action, config } => report(receivers(action, &config)),
        Command::Keys { action, config } => report(keys(action, &config)),
        Command::Contacts { action, config } => report(contacts(action, &config)),
        Command::Users { action, config } => report(users(action, &config)),
        Command::MosquittoConfig {
            out,
            service_password_file,
            force,
            config,
        } => report(mosquitto_config(
            &out,
            service_password_file.as_deref(),
            force,
            &config,
        )),
        Command::TokenCreate {
            role,
            label,
            stations,
            scopes,
            config,
        } => report(token_create(&role, &label, &stations, &scopes, &config)),
        Command::IngestFile {
            format,
            file,
            source,
            points,
            config,
        } => report(ingest_file(&format, &file, source.as_deref(), &points, &config)),
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
