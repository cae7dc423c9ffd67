//! `canhbao-bench`: each scenario measured against its baseline in the same run, or a
//! bounded fault injected and its cost counted (`BENCHMARKS.md`). A tool for developers
//! and operators sizing a deployment; it is not part of the service.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use canhbao_server::cli::{ConfigArgs, init_telemetry, load_or_report};
use clap::{Args, Parser};

/// Measure a scenario against its baseline measured in the same run (scenarios: rules,
/// dispatch, receipts, api, footprint, soak, sms), or inject a bounded fault and count what
/// it costs: `kill` (the service SIGKILLed and restarted while it issues and dispatches
/// alerts; alerts lost and played twice, goal 0) and `outage` (a broker of the bench's
/// own killed mid-dispatch for --outage-s; time from its return to all delivered). Both
/// fail if anything is lost or played twice.
#[derive(Parser)]
#[command(name = "canhbao-bench", version)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

#[derive(Args)]
struct BenchArgs {
    /// rules, dispatch, receipts, api, footprint, soak, sms, kill or outage.
    scenario: String,
    /// The `canhbao` binary the scenarios that run the service start (default: the one
    /// beside this program, as `cargo build` puts them).
    #[arg(long)]
    canhbao: Option<PathBuf>,
    /// A short run (one round, few receivers), for CI: it shows that the scenario runs and
    /// what it measures, not how fast.
    #[arg(long)]
    quick: bool,
    /// receipts: the PostgreSQL server to measure on (a scratch database is created beside
    /// the one this URL names, and dropped); without it, SQLite.
    #[arg(long)]
    postgres: Option<String>,
    /// Rounds; the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// dispatch, receipts, kill and outage: receivers, spread round-robin over the
    /// province's communes.
    #[arg(long, default_value_t = 1000)]
    receivers: usize,
    /// kill: province-wide alerts to issue, at most 100 (default 100; quick 10); outage:
    /// alerts issued before the broker dies (default 3).
    #[arg(long)]
    alerts: Option<usize>,
    /// kill: time between two bulletins.
    #[arg(long, default_value_t = 500)]
    pace_ms: u64,
    /// kill: how many times the service is SIGKILLed (quick: 2).
    #[arg(long, default_value_t = 5)]
    kills: usize,
    /// kill: the seed of the kill times (default: from the clock; the report prints it).
    #[arg(long)]
    seed: Option<u64>,
    /// outage: how long the broker stays dead (quick: 3).
    #[arg(long, default_value_t = 30)]
    outage_s: u64,
    /// dispatch and kill: the external broker (Mosquitto) to measure on; for dispatch
    /// also `embedded` (the service's own) or `spawn` (a Mosquitto started for the run,
    /// queues as in deploy/mosquitto/canhbao.conf).
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    broker: String,
    /// sms: recipients, spread over the province's communes.
    #[arg(long, default_value_t = 10_000)]
    recipients: usize,
    /// sms: the running Kannel's smsbox (with a fake SMSC), its sendsms user, and the
    /// variable holding its password.
    #[arg(long, default_value = "http://127.0.0.1:13013")]
    kannel: String,
    #[arg(long, default_value = "tester")]
    kannel_user: String,
    #[arg(long, default_value = "CANHBAO_SECRET_KANNEL_PASSWORD")]
    kannel_password_env: String,
    /// sms: requests in flight at once.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// api: requests per endpoint and round, and how many in flight at once.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// soak: how long the load runs (a reading from every station and a province-wide
    /// alert every minute, every receiver heartbeating every 30 s).
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// soak: how long each alert lives (its CAP expires); shorter than --minutes, the run
    /// also shows what the service holds once alerts end.
    #[arg(long, default_value_t = 120.0)]
    alert_minutes: f64,
    #[command(flatten)]
    config: ConfigArgs,
}

/// The `canhbao` binary to start: the one given, else the one beside this program.
fn canhbao_program(given: Option<&std::path::Path>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_owned());
    }
    let me = std::env::current_exe()?;
    let beside = me.with_file_name("canhbao");
    anyhow::ensure!(
        beside.exists(),
        "no canhbao binary beside {} (cargo build --bin canhbao, or --canhbao PATH)",
        me.display()
    );
    Ok(beside)
}

fn bench(b: BenchArgs) -> Result<ExitCode> {
    // The service's own log, when asked for (RUST_LOG=warn shows what went wrong in a run).
    if std::env::var_os("RUST_LOG").is_some() {
        init_telemetry();
    }
    let rounds = if b.quick { 1 } else { b.rounds };
    // Only the scenarios that start the service need its binary.
    let canhbao = b.canhbao.clone();
    let args = &b.config;
    if b.scenario == "sms" {
        let password = std::env::var(&b.kannel_password_env)
            .map_err(|_| anyhow::anyhow!("set {} to the sendsms user's password", b.kannel_password_env))?;
        let bench = bench::sms::SmsBench {
            recipients: if b.quick {
                b.recipients.min(200)
            } else {
                b.recipients
            },
            kannel: b.kannel,
            username: b.kannel_user,
            password,
            in_flight: b.in_flight,
            rounds,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        runtime.block_on(bench::sms::bench_sms(
            &args.sources(),
            &bench,
            &mut std::io::stdout(),
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    if b.scenario == "dispatch" {
        let bench = bench::dispatch::DispatchBench {
            receivers: if b.quick { b.receivers.min(50) } else { b.receivers },
            broker: b.broker,
            rounds,
            program: canhbao_program(canhbao.as_deref())?,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        runtime.block_on(bench::dispatch::bench_dispatch(
            &args.sources(),
            &bench,
            &mut std::io::stdout(),
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    if b.scenario == "kill" {
        let bench = bench::kill::KillBench {
            program: canhbao_program(canhbao.as_deref())?,
            receivers: if b.quick {
                b.receivers.min(100)
            } else {
                b.receivers
            },
            alerts: b.alerts.unwrap_or(if b.quick { 10 } else { 100 }),
            pace: std::time::Duration::from_millis(if b.quick { b.pace_ms.min(300) } else { b.pace_ms }),
            kills: if b.quick { b.kills.min(2) } else { b.kills },
            broker: b.broker,
            seed: b.seed.unwrap_or_else(bench::faults::clock_seed),
            // Quick: outbox timings short enough that a claim cut by the kill, and a
            // resend, come back within seconds.
            env: if b.quick {
                [
                    ("CANHBAO__OUTBOX__LEASE_S", "3"),
                    ("CANHBAO__OUTBOX__RESEND_S", "[2, 5]"),
                    ("CANHBAO__OUTBOX__IDLE_POLL_MS", "200"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
            } else {
                Vec::new()
            },
            patience: std::time::Duration::from_secs(if b.quick { 40 } else { 600 }),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        runtime.block_on(bench::kill::bench_kill(
            &args.sources(),
            &bench,
            &mut std::io::stdout(),
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    if b.scenario == "outage" {
        let bench = bench::outage::OutageBench {
            receivers: if b.quick {
                b.receivers.min(100)
            } else {
                b.receivers
            },
            alerts: b.alerts.unwrap_or(3),
            outage: std::time::Duration::from_secs(if b.quick { b.outage_s.min(3) } else { b.outage_s }),
            resend_s: b.quick.then(|| vec![2, 5]),
            patience: std::time::Duration::from_secs(if b.quick { 40 } else { 600 }),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        runtime.block_on(bench::outage::bench_outage(
            &args.sources(),
            &bench,
            &mut std::io::stdout(),
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    let Some(settings) = load_or_report(args) else {
        return Ok(ExitCode::FAILURE);
    };
    match b.scenario.as_str() {
        "receipts" => {
            let communes: Vec<domain::CommuneCode> =
                settings.area.communes.iter().map(|c| c.code.clone()).collect();
            let bench = bench::receipts::ReceiptsBench {
                receivers: if b.quick {
                    b.receivers.min(500)
                } else {
                    b.receivers
                },
                postgres: b.postgres,
                rounds,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(bench::receipts::bench_receipts(
                &communes,
                &bench,
                &mut std::io::stdout(),
            ))?;
        }
        "api" => {
            let communes: Vec<domain::CommuneCode> =
                settings.area.communes.iter().map(|c| c.code.clone()).collect();
            let bench = bench::api::ApiBench {
                alerts: if b.quick { 60 } else { 200 },
                receivers: if b.quick {
                    b.receivers.min(200)
                } else {
                    b.receivers
                },
                requests: if b.quick { b.requests.min(200) } else { b.requests },
                concurrency: b.concurrency,
                rounds,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(bench::api::bench_api(
                &args.sources(),
                &communes,
                &bench,
                &mut std::io::stdout(),
            ))?;
        }
        "footprint" => {
            let communes: Vec<domain::CommuneCode> =
                settings.area.communes.iter().map(|c| c.code.clone()).collect();
            let bench = bench::footprint::FootprintBench {
                program: canhbao_program(canhbao.as_deref())?,
                receivers: if b.quick {
                    b.receivers.min(1000)
                } else {
                    b.receivers
                },
                idle: std::time::Duration::from_secs(if b.quick { 1 } else { 5 }),
                rounds,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(bench::footprint::bench_footprint(
                &args.config_dir,
                &communes,
                &bench,
                &mut std::io::stdout(),
            ))?;
        }
        "soak" => {
            use std::time::Duration;
            let secs = |s: u64| Duration::from_secs(s);
            let minutes = |m: f64, flag: &str| {
                Duration::try_from_secs_f64(m * 60.0)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| anyhow::anyhow!("{flag} must be a positive number of minutes"))
            };
            let alert_life = minutes(b.alert_minutes, "--alert-minutes")?;
            let bench = if b.quick {
                bench::soak::SoakBench {
                    program: canhbao_program(canhbao.as_deref())?,
                    duration: secs(30),
                    receivers: b.receivers.min(100),
                    heartbeat: secs(5),
                    obs_every: secs(5),
                    alert_every: secs(5),
                    alert_life,
                    sample_every: secs(2),
                }
            } else {
                bench::soak::SoakBench {
                    program: canhbao_program(canhbao.as_deref())?,
                    duration: minutes(b.minutes, "--minutes")?,
                    receivers: b.receivers,
                    heartbeat: secs(30),
                    obs_every: secs(60),
                    alert_every: secs(60),
                    alert_life,
                    sample_every: secs(30),
                }
            };
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let report = runtime.block_on(bench::soak::bench_soak(
                &settings,
                &args.config_dir,
                &bench,
                &mut std::io::stdout(),
            ))?;
            if report.lost > 0 || report.twice > 0 {
                anyhow::bail!("the soak lost {} and played twice {}", report.lost, report.twice);
            }
        }
        "rules" => {
            bench::rules::bench_rules(
                &settings.rules,
                &settings.area,
                rounds,
                if b.quick { 30 } else { 365 },
                &mut std::io::stdout(),
            )?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(bench::timer::bench_timer(
                &settings,
                if b.quick { 3 } else { 20 },
                if b.quick { 3 } else { 7 },
                &mut std::io::stdout(),
            ))?;
        }
        other => {
            anyhow::bail!(
                "unknown bench scenario {other:?}; available: rules, dispatch, receipts, api, footprint, soak, sms, kill, outage"
            )
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match bench(cli.bench) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
