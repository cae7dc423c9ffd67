//! `canhbao-receiver`: the reference commune loudspeaker agent. It prints each verified
//! alert in Vietnamese (and reads it aloud through `--play-command`), reports receipts,
//! and remembers what it played in a state file. `--simulate N` runs N receivers in one
//! process, to load-test a broker and the service.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use canhbao_receiver::play::PlayCommand;
use canhbao_receiver::state::PlayedLog;
use canhbao_receiver::{
    Playback, ReceiverConfig, ReceiverEvent, load_provisioning_keys, load_trusted_keys, render_vi, run_with,
};
use clap::Parser;
use domain::{CommuneCode, ProvinceCode, ReceiverId};
use mqtt::BrokerUrl;
use protocol::{Topics, TrustedKeys};
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
    commune: Option<String>,
    /// This receiver's identity (letters, digits, - and _).
    #[arg(long)]
    id: Option<String>,
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
    /// An extra provisioning key (the key that signs key sets, protocol §10a), as
    /// KEY_ID=BASE64 (repeatable). The trusted keys file gives the service's, marked
    /// "provisioning".
    #[arg(long = "provisioning-key")]
    provisioning_key: Vec<String>,
    /// MQTT username [default: the receiver's --id when a password is given, as the
    /// generated Mosquitto password file and the embedded broker expect].
    #[arg(long)]
    username: Option<String>,
    /// MQTT password; prefer the environment variable.
    #[arg(long, env = "CANHBAO_RECEIVER_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 30)]
    heartbeat_s: u64,
    /// Enrolled for drills: play Exercise and Test alerts too (the service registers the
    /// receiver with `--drills` as well). Without it, they are ignored.
    #[arg(long)]
    drills: bool,
    /// For an mqtts:// broker: the CA that signed its certificate (PEM; default: the
    /// system's roots).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// This receiver's certificate (PEM), for brokers that require one; with --client-key.
    #[arg(long)]
    client_cert: Option<PathBuf>,
    #[arg(long)]
    client_key: Option<PathBuf>,
    /// The commune's announcement window for Normal messages, HH:MM-HH:MM in local time
    /// (UTC+7), as its operator schedules the programme (repeatable). A Normal message
    /// waits for the next window; Priority and Emergency ones never wait. Without any,
    /// everything plays as it comes.
    #[arg(long = "announce-window", value_name = "HH:MM-HH:MM")]
    announce_window: Vec<String>,
    /// Where the versions played are recorded, so that a restart does not play them
    /// again [default: var/receiver-ID.state].
    #[arg(long)]
    state: Option<PathBuf>,
    /// Read each alert aloud through this command, e.g. "espeak-ng -v vi": split on
    /// whitespace and run without a shell, the text on its standard input, repeated as
    /// the alert says. Without it, alerts are printed only.
    #[arg(long)]
    play_command: Option<String>,
    /// Run N receivers in this process, with ids sim-COMMUNE-I, spread over --communes.
    #[arg(long, value_name = "N")]
    simulate: Option<usize>,
    /// With --simulate: the communes to spread the receivers over, comma-separated
    /// [default: --commune].
    #[arg(long, value_delimiter = ',')]
    communes: Vec<String>,
    /// With --simulate: the directory of the receivers' state files.
    #[arg(long, default_value = "var/sim")]
    state_dir: PathBuf,
    /// With --simulate: print only the totals, at exit.
    #[arg(long)]
    quiet: bool,
}

/// Settings shared by every receiver of the process.
struct Common {
    broker: BrokerUrl,
    topics: Topics,
    keys: TrustedKeys,
    provisioning: TrustedKeys,
    username: Option<String>,
    password: Option<secrecy::SecretString>,
    heartbeat: Duration,
    play_command: Option<PlayCommand>,
    drills: bool,
    tls: mqtt::TlsMaterial,
    windows: canhbao_receiver::windows::AnnouncementWindows,
}

/// One receiver to run.
struct Planned {
    id: ReceiverId,
    commune: CommuneCode,
    state: PathBuf,
}

/// What to run: one receiver, or a simulated fleet.
enum Mode {
    Single(Planned),
    Simulate { receivers: Vec<Planned>, quiet: bool },
}

/// Turns the raw arguments into validated settings, reporting every problem at once.
fn validate(cli: Cli) -> Result<(Common, Mode)> {
    let mut problems: Vec<String> = Vec::new();
    let mut keys = TrustedKeys::default();
    if (cli.trusted_keys.exists() || cli.trusted_key.is_empty())
        && let Err(e) = load_trusted_keys(&cli.trusted_keys, &mut keys)
    {
        problems.push(e.to_string());
    }
    let mut provisioning = TrustedKeys::default();
    if cli.trusted_keys.exists()
        && let Err(e) = load_provisioning_keys(&cli.trusted_keys, &mut provisioning)
    {
        problems.push(e.to_string());
    }
    for (flag, given, into) in [
        ("--trusted-key", &cli.trusted_key, &mut keys),
        ("--provisioning-key", &cli.provisioning_key, &mut provisioning),
    ] {
        for k in given {
            match k.split_once('=') {
                Some((id, b64)) => {
                    if let Err(e) = into.add_base64(id, b64) {
                        problems.push(format!("{flag}: {e}"));
                    }
                }
                None => problems.push(format!("{flag} {k:?} must be KEY_ID=BASE64")),
            }
        }
    }
    if provisioning.is_empty() {
        tracing::warn!(
            "no provisioning key: key sets (key rotation and revocation, protocol §10a) will be refused"
        );
    }
    if keys.is_empty() && problems.is_empty() {
        problems.push("no trusted keys: give --trusted-keys FILE or --trusted-key KEY_ID=BASE64".into());
    }
    if cli.heartbeat_s == 0 {
        problems.push("--heartbeat-s must be at least 1".into());
    }
    let broker = BrokerUrl::parse(&cli.broker)
        .map_err(|e| problems.push(e.to_string()))
        .ok();
    let read = |flag: &str, path: &Option<PathBuf>, problems: &mut Vec<String>| {
        path.as_ref().and_then(|p| {
            std::fs::read(p)
                .map_err(|e| problems.push(format!("{flag} {}: {e}", p.display())))
                .ok()
        })
    };
    let ca_pem = read("--ca-file", &cli.ca_file, &mut problems);
    let cert = read("--client-cert", &cli.client_cert, &mut problems);
    let key = read("--client-key", &cli.client_key, &mut problems);
    let client = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            problems.push("--client-cert and --client-key go together".into());
            None
        }
    };
    let tls = mqtt::TlsMaterial { ca_pem, client };
    if (tls.ca_pem.is_some() || tls.client.is_some())
        && let Err(e) = mqtt::tls_config(&tls)
    {
        problems.push(format!("TLS files: {e}"));
    }
    let topics = ProvinceCode::new(&cli.province)
        .map_err(|e| problems.push(format!("--province: {e}")))
        .ok()
        .and_then(|p| {
            Topics::new(&cli.prefix, p)
                .map_err(|e| problems.push(e.to_string()))
                .ok()
        });
    let play_command = cli.play_command.as_deref().and_then(|c| {
        PlayCommand::parse(c)
            .map_err(|e| problems.push(e.to_string()))
            .ok()
    });
    let mode = match cli.simulate {
        None => {
            if !cli.communes.is_empty() {
                problems.push("--communes needs --simulate; a receiver serves one --commune".into());
            }
            if cli.quiet {
                problems.push("--quiet needs --simulate".into());
            }
            let commune = match &cli.commune {
                Some(c) => CommuneCode::new(c)
                    .map_err(|e| problems.push(format!("--commune: {e}")))
                    .ok(),
                None => {
                    problems.push("--commune is required".into());
                    None
                }
            };
            let id = match &cli.id {
                Some(i) => ReceiverId::new(i)
                    .map_err(|e| problems.push(format!("--id: {e}")))
                    .ok(),
                None => {
                    problems.push("--id is required (or --simulate N)".into());
                    None
                }
            };
            match (id, commune) {
                (Some(id), Some(commune)) => {
                    let state = cli
                        .state
                        .clone()
                        .unwrap_or_else(|| PathBuf::from(format!("var/receiver-{id}.state")));
                    Some(Mode::Single(Planned { id, commune, state }))
                }
                _ => None,
            }
        }
        Some(n) => {
            if n == 0 {
                problems.push("--simulate needs at least 1 receiver".into());
            }
            if cli.id.is_some() {
                problems.push("--id is not used with --simulate: ids are sim-COMMUNE-I".into());
            }
            if cli.state.is_some() {
                problems.push("--state is not used with --simulate: see --state-dir".into());
            }
            let raw: Vec<&String> = if cli.communes.is_empty() {
                cli.commune.iter().collect()
            } else {
                cli.communes.iter().collect()
            };
            if raw.is_empty() {
                problems.push("--simulate needs --communes or --commune".into());
            }
            let mut communes = Vec::new();
            for c in raw {
                match CommuneCode::new(c.trim()) {
                    Ok(c) => communes.push(c),
                    Err(e) => problems.push(format!("--communes: {e}")),
                }
            }
            simulated(n, &communes, &cli.state_dir)
                .map_err(|e| problems.push(e))
                .ok()
                .map(|receivers| Mode::Simulate {
                    receivers,
                    quiet: cli.quiet,
                })
        }
    };
    let windows = canhbao_receiver::windows::AnnouncementWindows::parse(&cli.announce_window)
        .map_err(|e| problems.push(format!("--announce-window: {e}")))
        .unwrap_or_default();
    match (broker, topics, mode) {
        (Some(broker), Some(topics), Some(mode)) if problems.is_empty() => Ok((
            Common {
                broker,
                topics,
                keys,
                provisioning,
                username: cli.username,
                password: cli.password.map(secrecy::SecretString::from),
                heartbeat: Duration::from_secs(cli.heartbeat_s),
                play_command,
                drills: cli.drills,
                tls,
                windows,
            },
            mode,
        )),
        _ => bail!("{}", problems.join("\n")),
    }
}

/// The simulated receivers: `sim-{commune}-{i}`, receiver `i` serving commune `i` modulo
/// their number.
fn simulated(n: usize, communes: &[CommuneCode], dir: &Path) -> Result<Vec<Planned>, String> {
    if communes.is_empty() {
        return Ok(Vec::new());
    }
    (0..n)
        .map(|i| {
            let commune = communes[i % communes.len()].clone();
            let id = ReceiverId::new(&format!("sim-{commune}-{i}")).map_err(|e| e.to_string())?;
            let state = dir.join(format!("{id}.state"));
            Ok(Planned { id, commune, state })
        })
        .collect()
}

fn receiver_config(common: &Common, p: &Planned) -> ReceiverConfig {
    ReceiverConfig {
        broker: common.broker.clone(),
        receiver_id: p.id.clone(),
        commune: p.commune.clone(),
        topics: common.topics.clone(),
        keys: common.keys.clone(),
        provisioning: common.provisioning.clone(),
        // Beside the state file: var/receiver-ID.keys.
        key_set_file: Some(p.state.with_extension("keys")),
        // A receiver logs in as its id (protocol §2) unless told otherwise.
        username: common
            .username
            .clone()
            .or_else(|| common.password.as_ref().map(|_| p.id.to_string())),
        password: common.password.clone(),
        heartbeat: common.heartbeat,
        drills: common.drills,
        tls: common.tls.clone(),
        windows: common.windows.clone(),
    }
}

/// Opens a receiver's state file, logging what loading found.
fn open_state(p: &Planned) -> Result<PlayedLog> {
    let (log, report) = PlayedLog::open(&p.state, chrono::Utc::now())?;
    if report.torn || report.corrupt > 0 {
        tracing::warn!(receiver = %p.id, state = %p.state.display(), torn = report.torn,
            corrupt = report.corrupt, "state file had unreadable lines; they were dropped");
    }
    tracing::debug!(receiver = %p.id, state = %p.state.display(), kept = report.kept,
        expired = report.expired, "state loaded");
    Ok(log)
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM (how a service manager stops us).
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn single(common: Common, p: Planned) -> Result<()> {
    let played = open_state(&p)?;
    let cfg = receiver_config(&common, &p);
    tracing::info!(receiver = %cfg.receiver_id, commune = %cfg.commune, keys = cfg.keys.len(),
        broker = %format!("{}:{}", cfg.broker.host, cfg.broker.port),
        state = %p.state.display(), remembered = played.len(),
        play_command = %common.play_command.as_ref().map(ToString::to_string).unwrap_or_default(),
        "receiver starting");
    let shutdown = CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let playback = Playback {
        played,
        command: common.play_command.clone(),
    };
    let task = tokio::spawn(run_with(cfg, playback, tx, shutdown.clone()));
    let stop = terminated();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            ev = rx.recv() => match ev {
                Some(ReceiverEvent::Played(alert)) => println!("{}", render_vi(&alert)),
                Some(ReceiverEvent::Rejected { alert_id, reason }) => {
                    println!("!!! Từ chối tin {alert_id}: {reason}\n")
                }
                Some(ReceiverEvent::Failed { alert_id, reason }) => {
                    println!("!!! Không phát được tin {alert_id}: {reason}\n")
                }
                Some(ReceiverEvent::Interrupted { alert_id, by }) => {
                    println!("--- Tin {alert_id} tạm dừng để phát tin khẩn cấp {by}\n")
                }
                Some(ReceiverEvent::DrillIgnored { alert_id, status }) => {
                    println!("--- Tin {alert_id} ({status}) không phát: máy thu không tham gia diễn tập (--drills)\n")
                }
                Some(ReceiverEvent::Acknowledged { alert_id, renews }) => {
                    println!("--- Tin {alert_id} gia hạn tin {renews} đã phát: không phát lại\n")
                }
                Some(ReceiverEvent::Scheduled { alert_id, effective }) => println!(
                    "--- Tin {alert_id} sẽ phát lúc {}\n",
                    protocol::time::local_time_vi(effective)
                ),
                Some(ReceiverEvent::Replaced { alert_id, by }) => {
                    println!("--- Tin {alert_id} đã được thay bằng tin {by}: không phát\n")
                }
                Some(ReceiverEvent::KeySetApplied { seq, trusted, revoked }) => {
                    println!("--- Bộ khóa {seq} áp dụng: tin tưởng {}; thu hồi {}\n", trusted.join(", "), revoked.join(", "))
                }
                Some(ReceiverEvent::KeySetRefused { reason }) => println!("!!! Từ chối bộ khóa: {reason}\n"),
                Some(ReceiverEvent::Connected) => tracing::info!("connected and subscribed"),
                None => break,
            },
        }
    }
    shutdown.cancel();
    let _ = task.await;
    Ok(())
}

/// Totals of a simulation.
#[derive(Default)]
struct Totals {
    connected: HashSet<usize>,
    played: usize,
    alerts: HashSet<String>,
    rejected: usize,
    failed: usize,
}

async fn simulate(common: Common, receivers: Vec<Planned>, quiet: bool) -> Result<()> {
    let mut logs = Vec::with_capacity(receivers.len());
    for p in &receivers {
        logs.push(open_state(p)?);
    }
    let communes: HashSet<&CommuneCode> = receivers.iter().map(|p| &p.commune).collect();
    tracing::info!(receivers = receivers.len(), communes = communes.len(),
        broker = %format!("{}:{}", common.broker.host, common.broker.port), "simulation starting");
    let started = std::time::Instant::now();
    let shutdown = CancellationToken::new();
    // Each receiver's events reach one channel, tagged with its index.
    let (all_tx, mut all_rx) = mpsc::unbounded_channel::<(usize, ReceiverEvent)>();
    let mut tasks = Vec::with_capacity(receivers.len());
    for (i, (p, played)) in receivers.iter().zip(logs).enumerate() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let playback = Playback {
            played,
            command: common.play_command.clone(),
        };
        tasks.push(tokio::spawn(run_with(
            receiver_config(&common, p),
            playback,
            tx,
            shutdown.clone(),
        )));
        let all_tx = all_tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                if all_tx.send((i, ev)).is_err() {
                    break;
                }
            }
        });
    }
    drop(all_tx);
    let mut totals = Totals::default();
    let mut all_connected = false;
    let mut by_alert: HashMap<String, usize> = HashMap::new();
    let stop = terminated();
    tokio::pin!(stop);
    loop {
        let (i, ev) = tokio::select! {
            _ = &mut stop => break,
            ev = all_rx.recv() => match ev {
                Some(ev) => ev,
                None => break,
            },
        };
        let id = &receivers[i].id;
        match ev {
            ReceiverEvent::Connected => {
                totals.connected.insert(i);
                if !quiet && !all_connected && totals.connected.len() == receivers.len() {
                    all_connected = true;
                    println!(
                        "all {} receivers connected after {:.1} s",
                        receivers.len(),
                        started.elapsed().as_secs_f64()
                    );
                }
            }
            ReceiverEvent::Played(alert) => {
                totals.played += 1;
                *by_alert.entry(alert.id.clone()).or_default() += 1;
                if !quiet {
                    println!("{id} played {}", alert.id);
                }
                totals.alerts.insert(alert.id);
            }
            ReceiverEvent::Rejected { alert_id, reason } => {
                totals.rejected += 1;
                if !quiet {
                    println!("{id} rejected {alert_id}: {reason}");
                }
            }
            ReceiverEvent::Failed { alert_id, reason } => {
                totals.failed += 1;
                if !quiet {
                    println!("{id} failed {alert_id}: {reason}");
                }
            }
            ReceiverEvent::DrillIgnored { alert_id, .. } => {
                if !quiet {
                    println!("{id} ignored drill {alert_id} (not enrolled)");
                }
            }
            ReceiverEvent::Interrupted { alert_id, by } => {
                if !quiet {
                    println!("{id} interrupted {alert_id} for {by}");
                }
            }
            ReceiverEvent::Acknowledged { alert_id, renews } => {
                if !quiet {
                    println!("{id} acknowledged renewal {alert_id} of {renews}");
                }
            }
            ReceiverEvent::Scheduled { alert_id, effective } => {
                if !quiet {
                    println!("{id} scheduled {alert_id} for {effective}");
                }
            }
            ReceiverEvent::Replaced { alert_id, by } => {
                if !quiet {
                    println!("{id} did not play {alert_id}: replaced by {by}");
                }
            }
            ReceiverEvent::KeySetApplied { seq, .. } => {
                if !quiet {
                    println!("{id} applied key set {seq}");
                }
            }
            ReceiverEvent::KeySetRefused { reason } => {
                if !quiet {
                    println!("{id} refused a key set: {reason}");
                }
            }
        }
    }
    shutdown.cancel();
    for t in tasks {
        let _ = t.await;
    }
    println!(
        "simulated {} receivers over {} communes: {} connected, {} played ({} distinct alerts), {} rejected, {} failed",
        receivers.len(),
        communes.len(),
        totals.connected.len(),
        totals.played,
        totals.alerts.len(),
        totals.rejected,
        totals.failed
    );
    let mut per_alert: Vec<(String, usize)> = by_alert.into_iter().collect();
    per_alert.sort();
    for (alert, n) in per_alert {
        println!("  {alert}: played by {n}");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // A simulated fleet would log every connection of every receiver: warnings only,
    // unless RUST_LOG asks for more.
    let level = if cli.simulate.is_some() { "warn" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // Colours only on a terminal: never escape codes in a file or journald.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let (common, mode) = match validate(cli) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let result = match mode {
        Mode::Single(p) => single(common, p).await,
        Mode::Simulate { receivers, quiet } => simulate(common, receivers, quiet).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(cli: &[&str]) -> (Common, Mode) {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys.json");
        std::fs::write(
            &keys,
            r#"[{"key_id":"ed25519:56475aa75463474c","public_key":"A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=","state":"active"}]"#,
        )
        .unwrap();
        let mut args = vec!["canhbao-receiver", "--trusted-keys", keys.to_str().unwrap()];
        args.extend_from_slice(cli);
        validate(Cli::try_parse_from(args).unwrap()).unwrap()
    }

    #[test]
    fn a_receiver_given_a_password_logs_in_as_its_id_unless_told_otherwise() {
        let base = ["--commune", "06385", "--id", "loa-06385-01"];
        let (c, Mode::Single(p)) = common(&[&base[..], &["--password", "pw"]].concat()) else {
            panic!("one receiver")
        };
        assert_eq!(receiver_config(&c, &p).username.as_deref(), Some("loa-06385-01"));
        let (c, Mode::Single(p)) =
            common(&[&base[..], &["--password", "pw", "--username", "other"]].concat())
        else {
            panic!("one receiver")
        };
        assert_eq!(receiver_config(&c, &p).username.as_deref(), Some("other"));
        // Without a password it connects anonymously, as before.
        let (c, Mode::Single(p)) = common(&base) else {
            panic!("one receiver")
        };
        assert_eq!(receiver_config(&c, &p).username, None);
    }
}
