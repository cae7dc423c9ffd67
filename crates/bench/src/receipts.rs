//! `canhbao bench receipts`: how fast receipts from N registered receivers are persisted
//! through canhbao's inbound path (the same task that takes them from the broker: each
//! checked, its receiver looked up, stored once, its delivery moved forward, in
//! transactions of up to 512), against raw batched inserts of the same rows into the same
//! table in the same run. On SQLite (a temporary file) or PostgreSQL (a scratch database
//! beside the one `--database` names, dropped afterwards).

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use chrono::Utc;
use dispatch::Topics;
use domain::{
    AlarmLevel, Alert, AlertId, AlertOrigin, AlertSpec, AlertStatus, CommuneCode, Hazard, MessageClass,
    MsgType, ProvinceCode, ReceiptStatus, ReceiverId, Repeat,
};
use mqtt::InboundMessage;
use store::{NewDelivery, RegisteredReceiver, SignedPayload, Store};
use tokio_util::sync::CancellationToken;

use crate::dispatch::{TempDir, median, unique};

/// What to measure.
#[derive(Debug, Clone)]
pub struct ReceiptsBench {
    /// Registered receivers; each sends `received` and `played`.
    pub receivers: usize,
    /// `None`: SQLite. `Some(url)`: PostgreSQL, on a scratch database beside `url`'s.
    pub postgres: Option<String>,
    pub rounds: usize,
}

/// One round: the baseline and canhbao, each over the same rows.
#[derive(Debug, Clone, Copy)]
pub struct ReceiptsRound {
    pub raw: Duration,
    pub canhbao: Duration,
    /// Deliveries canhbao moved to `played` (all of them, or the round failed).
    pub played: usize,
}

#[derive(Debug, Clone)]
pub struct ReceiptsReport {
    pub receivers: usize,
    pub engine: &'static str,
    pub rounds: Vec<ReceiptsRound>,
}

impl ReceiptsReport {
    pub fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        let n = (2 * self.receivers) as f64;
        let raw = median(self.rounds.iter().map(|r| r.raw).collect());
        let canhbao = median(self.rounds.iter().map(|r| r.canhbao).collect());
        let (raw_rate, rate) = (
            n / raw.as_secs_f64().max(1e-9),
            n / canhbao.as_secs_f64().max(1e-9),
        );
        writeln!(
            out,
            "receipts bench: {} receipts (received + played from {} receivers over 65 communes), {}, median of {} rounds",
            2 * self.receivers,
            self.receivers,
            self.engine,
            self.rounds.len()
        )?;
        writeln!(
            out,
            "  baseline raw inserts      {:>9.1} ms  {:>9.0} receipts/s  plain multi-row INSERTs (up to 100 rows), {} per transaction",
            raw.as_secs_f64() * 1000.0,
            raw_rate,
            dispatch::inbound::MAX_BATCH
        )?;
        writeln!(
            out,
            "  canhbao inbound path      {:>9.1} ms  {:>9.0} receipts/s  checked, admitted, stored once, deliveries moved",
            canhbao.as_secs_f64() * 1000.0,
            rate
        )?;
        writeln!(
            out,
            "  ratio (rate)              {:>9.2}x  canhbao / raw (goal >= 0.5)",
            rate / raw_rate.max(1e-9)
        )?;
        let min_played = self.rounds.iter().map(|r| r.played).min().unwrap_or(0);
        writeln!(
            out,
            "  played (fewest in a round): {min_played}/{}",
            self.receivers
        )
    }
}

fn bench_alert(id: &str, communes: &[CommuneCode], now: chrono::DateTime<Utc>) -> Result<Alert> {
    Ok(Alert::new(AlertSpec {
        id: AlertId::new(id)?,
        province: ProvinceCode::new("20")?,
        msg_type: MsgType::Alert,
        status: AlertStatus::Actual,
        references: vec![],
        origin: AlertOrigin::Computed {
            rule_id: "bench@1".into(),
        },
        hazard: Hazard::Flood,
        risk_level: None,
        alarm_level: Some(AlarmLevel::Bd3),
        station: None,
        class: MessageClass::Emergency,
        communes: communes.to_vec(),
        sent: now,
        effective: now,
        expires: now + chrono::Duration::hours(6),
        headline: "bench".into(),
        description: "bench".into(),
        instruction: String::new(),
        repeat: Repeat {
            times: 1,
            interval_s: 0,
        },
        provisional: vec![],
        english: None,
        follow: None,
    })?)
}

/// Registers `n` receivers round-robin over `communes` (`bench-<commune>-<i>`); returns
/// each one's id and commune.
pub(crate) async fn register_bench_receivers(
    store: &Store,
    communes: &[CommuneCode],
    n: usize,
    now: chrono::DateTime<Utc>,
) -> Result<Vec<(String, String)>> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let c = &communes[i % communes.len()];
        let (id, commune) = (format!("bench-{c}-{i}"), c.to_string());
        store
            .register_receiver(&RegisteredReceiver {
                receiver_id: id.clone(),
                commune: commune.clone(),
                password_hash: None,
                trusted_keys: vec![],
                firmware: None,
                registered: now,
                drills: false,
            })
            .await?;
        ids.push((id, commune));
    }
    Ok(ids)
}

/// Writes alert `id` to every one of `communes`, with its deliveries (tracked for every
/// receiver registered by then), as the pipeline would.
pub(crate) async fn insert_bench_alert(
    store: &Store,
    id: &str,
    communes: &[CommuneCode],
    now: chrono::DateTime<Utc>,
) -> Result<Alert> {
    let alert = bench_alert(id, communes, now)?;
    let deliveries: Vec<NewDelivery> = communes
        .iter()
        .map(|c| NewDelivery {
            commune: c.to_string(),
            topic: format!("bench/{c}/{id}"),
            priority: 2,
        })
        .collect();
    let signed = SignedPayload {
        payload: b"{}".to_vec(),
        key_id: "ed25519:bench".into(),
        sig: "c2ln".into(),
    };
    let mut tx = store.begin().await?;
    tx.insert_alert(&alert, &signed, &deliveries, now).await?;
    tx.commit().await?;
    Ok(alert)
}

async fn round(store: &Store, communes: &[CommuneCode], receivers: usize) -> Result<ReceiptsRound> {
    let now = Utc::now();
    let topics = Topics::new("bench/v1", ProvinceCode::new("20")?)?;
    let ids = register_bench_receivers(store, communes, receivers, now).await?;
    let alert = insert_bench_alert(store, "bench-receipts", communes, now).await?;

    // The baseline: the same rows (under another alert id), inserted plainly.
    let rows: Vec<(String, String, String, String, i64)> = [ReceiptStatus::Received, ReceiptStatus::Played]
        .iter()
        .flat_map(|s| {
            ids.iter().map(|(id, c)| {
                (
                    "bench-raw".to_owned(),
                    id.clone(),
                    c.clone(),
                    s.code().to_owned(),
                    now.timestamp_millis(),
                )
            })
        })
        .collect();
    let t = Instant::now();
    store
        .bench_insert_receipts_raw(&rows, dispatch::inbound::MAX_BATCH, now)
        .await?;
    let raw = t.elapsed();

    // canhbao: the inbound task, fed as the broker feeds it.
    let messages: Vec<InboundMessage> = [ReceiptStatus::Received, ReceiptStatus::Played]
        .iter()
        .flat_map(|s| {
            ids.iter().map(|(id, c)| {
                let receiver = ReceiverId::new(id).expect("a valid receiver id");
                InboundMessage {
                    topic: topics.receipt(&receiver),
                    payload: dispatch::wire::receipt_bytes(alert.id.as_str(), id, c, *s, None, now),
                    retain: false,
                    connection: 1,
                }
            })
        })
        .collect();
    let (tx, rx) = tokio::sync::mpsc::channel(messages.len().max(1));
    let (telemetry_tx, _telemetry_rx) = tokio::sync::mpsc::channel(16);
    let t = Instant::now();
    let task = tokio::spawn(dispatch::inbound::run_inbound(
        store.clone(),
        topics,
        rx,
        telemetry_tx,
        Default::default(),
        CancellationToken::new(),
    ));
    for m in messages {
        tx.send(m).await.context("the inbound task stopped")?;
    }
    drop(tx);
    task.await?;
    let canhbao = t.elapsed();
    let played = store
        .receiver_deliveries(alert.id.as_str())
        .await?
        .iter()
        .filter(|d| d.state == "played")
        .count();
    ensure!(
        played == receivers,
        "only {played} of {receivers} deliveries were moved to played"
    );
    Ok(ReceiptsRound { raw, canhbao, played })
}

pub async fn bench_receipts(
    communes: &[CommuneCode],
    bench: &ReceiptsBench,
    out: &mut impl Write,
) -> Result<ReceiptsReport> {
    let mut rounds = Vec::new();
    for _ in 0..bench.rounds.max(1) {
        let r = match &bench.postgres {
            None => {
                let dir = TempDir::new()?;
                let store = Store::open(&format!("sqlite://{}", dir.0.join("bench.db").display())).await?;
                let r = round(&store, communes, bench.receivers).await;
                store.close().await;
                r?
            }
            Some(admin) => {
                let name = unique("canhbao_bench").replace('-', "_");
                let url = store::scratch::create(admin, &name).await?;
                let r = async {
                    let store = Store::open(&url).await?;
                    let r = round(&store, communes, bench.receivers).await;
                    store.close().await;
                    r
                }
                .await;
                store::scratch::drop(admin, &name).await?;
                r?
            }
        };
        rounds.push(r);
    }
    let report = ReceiptsReport {
        receivers: bench.receivers,
        engine: if bench.postgres.is_some() {
            "PostgreSQL"
        } else {
            "SQLite (WAL, synchronous FULL)"
        },
        rounds,
    };
    report.write(out)?;
    Ok(report)
}
