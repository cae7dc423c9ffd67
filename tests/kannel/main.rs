//! The Kannel gateway against a real Kannel 1.4.5 (Debian's `kannel` and `kannel-extras`,
//! started by [`canhbao_tests::kannel`]), with this test as the delivery-report endpoint.
//! What fakesmsc prints is what an SMSC got.
//!
//! Without bearerbox on the machine the test passes at once: `.ci/run` installs Kannel.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};

use canhbao_tests::kannel::{Kannel, decode_fakesmsc_ucs2, installed};

use sms::callback::{DeliveryReport, DlrStatus};
use sms::kannel::{Encoding, KannelConfig, KannelGateway, parse_dlr_query};
use sms::link::GatewayLimits;
use sms::message::{MessageRef, RejectKind, SendOutcome, SmsMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Percent signs, `+`, `/`, `&`, `=`, spaces and Vietnamese: everything a dlr-url can break on.
const SECRET: &str = "Zq%C3+/&x=1 ~Lạng Sơn %d%A";
const UCS2_TEXT: &str = "Cảnh báo lũ cấp 3 tại xã Hữu Lũng. Di chuyển ngay đến nơi an toàn!";
const GSM7_TEXT: &str = "Canh bao lu cap 3 tai xa Huu Lung: di chuyen ngay @ {noi an toan} 100%";

/// The delivery-report endpoint: answers every request 200 and hands on its target.
async fn dlr_endpoint() -> (u16, mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 2048];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16_384 {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                if let Some(target) = head.lines().next().and_then(|l| l.split(' ').nth(1)) {
                    let _ = tx.send(target.to_owned());
                }
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                    .await;
            });
        }
    });
    (port, rx)
}

fn sms(to: &str, text: &str, encoding: Encoding, reference: &str) -> SmsMessage {
    SmsMessage {
        to: to.to_owned(),
        text: text.to_owned(),
        encoding,
        message_ref: MessageRef::new(reference).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kannel_takes_our_messages_delivers_them_intact_and_reports_back() {
    let Some((bearerbox, smsbox)) = installed() else {
        return;
    };
    let started = Instant::now();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();

    let (dlr_port, mut dlrs) = dlr_endpoint().await;
    let mut kannel = Kannel::configure(dlr_port);
    kannel.start_boxes(&bearerbox, &smsbox, &http).await;

    let config = KannelConfig {
        base_url: kannel.sendsms_base(),
        username: "tester".to_owned(),
        password: "foobar".to_owned().into(),
        from: "CANHBAO".to_owned(),
        dlr_url_base: format!("http://127.0.0.1:{dlr_port}/api/v1/sms/dlr/kannel"),
        dlr_secret: SECRET.to_owned().into(),
    };
    let limits = GatewayLimits {
        per_second: NonZeroU32::new(20).unwrap(),
        burst: NonZeroU32::new(2).unwrap(),
        max_in_flight: NonZeroUsize::new(2).unwrap(),
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(1),
    };
    let gateway = Arc::new(KannelGateway::new(config.clone(), limits).unwrap());

    // No SMSC link yet: bearerbox keeps the message and says so.
    let queued = sms(
        "+84912345670",
        "Canh bao thu: gui khi co duong truyen",
        Encoding::Gsm7,
        "queued-1",
    );
    assert_eq!(gateway.send(&queued).await.unwrap(), SendOutcome::Queued);

    kannel.start_fakesmsc(&http).await;

    let ucs2 = sms(
        "+84912345678",
        UCS2_TEXT,
        Encoding::Ucs2,
        "alert-1.v1:84912345678",
    );
    let gsm7 = sms(
        "+84912345679",
        GSM7_TEXT,
        Encoding::Gsm7,
        "alert-1.v1:84912345679",
    );
    assert_eq!(gateway.send(&ucs2).await.unwrap(), SendOutcome::Accepted);
    assert_eq!(gateway.send(&gsm7).await.unwrap(), SendOutcome::Accepted);

    let wrong = KannelGateway::new(
        KannelConfig {
            password: "not-the-password".to_owned().into(),
            ..config.clone()
        },
        limits,
    )
    .unwrap();
    let refused = sms("+84912345677", "x", Encoding::Gsm7, "refused-1");
    assert_eq!(
        wrong.send(&refused).await.unwrap(),
        SendOutcome::Rejected {
            status: 403,
            reason: "Authorization failed for sendsms".to_owned(),
            kind: RejectKind::Permanent,
        }
    );

    // A batch through the limits: 2 at once, 20 a second after a burst of 2. Whatever the
    // bucket held, 6 messages take at least (6 - 2) / 20 s.
    let batch_started = Instant::now();
    let mut batch = tokio::task::JoinSet::new();
    for i in 0..6 {
        let gateway = Arc::clone(&gateway);
        batch.spawn(async move {
            let msg = sms(
                &format!("+8491234560{i}"),
                &format!("Batch {i}"),
                Encoding::Gsm7,
                &format!("batch-{i}"),
            );
            gateway.send(&msg).await.unwrap()
        });
    }
    while let Some(outcome) = batch.join_next().await {
        assert_eq!(outcome.unwrap(), SendOutcome::Accepted);
    }
    let batch_took = batch_started.elapsed();
    assert!(
        batch_took >= Duration::from_millis(200),
        "the rate limit let 6 through in {batch_took:?}"
    );

    // Delivery reports: every one authenticated by the secret; for a fake SMSC, an 8 (SMSC
    // accepted, "ACK/") and a 1 (delivered, with the SMSC's message id) per message.
    // smsbox makes its callbacks from several threads, so the 1 may come before the 8:
    // whoever applies them must not depend on their order.
    let mut expected: Vec<String> = ["queued-1", "alert-1.v1:84912345678", "alert-1.v1:84912345679"]
        .into_iter()
        .map(str::to_owned)
        .chain((0..6).map(|i| format!("batch-{i}")))
        .collect();
    expected.sort();
    let mut reports: HashMap<String, Vec<DeliveryReport>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reports.values().filter(|r| r.len() >= 2).count() < expected.len() {
        let target = tokio::time::timeout_at(deadline, dlrs.recv())
            .await
            .unwrap_or_else(|_| panic!("delivery reports missing after 10 s; got {reports:#?}"))
            .unwrap();
        let (path, query) = target.split_once('?').unwrap();
        assert_eq!(path, "/api/v1/sms/dlr/kannel");
        let report = parse_dlr_query(query, SECRET).unwrap_or_else(|e| panic!("{target}: {e}"));
        assert!(parse_dlr_query(query, "another-gateways-secret").is_err());
        reports
            .entry(report.message_ref.to_string())
            .or_default()
            .push(report);
    }
    let mut got: Vec<_> = reports.keys().cloned().collect();
    got.sort();
    assert_eq!(
        got, expected,
        "no report for the refused message, one pair for each sent"
    );
    let mut delivered_first = 0;
    for (reference, list) in &reports {
        let statuses: Vec<_> = list.iter().map(|r| r.status).collect();
        let by = |status| list.iter().find(|r| r.status == status);
        let (Some(ack), Some(delivered), 2) =
            (by(DlrStatus::SmscAccepted), by(DlrStatus::Delivered), list.len())
        else {
            panic!("{reference}: reports {statuses:?}, not an 8 and a 1");
        };
        delivered_first += usize::from(statuses[0] == DlrStatus::Delivered);
        assert_eq!(
            (ack.reason.as_str(), ack.smsc_message_id.as_deref()),
            ("ACK/", None),
            "{reference}"
        );
        assert!(
            delivered
                .smsc_message_id
                .as_deref()
                .is_some_and(|id| id.len() == 36),
            "{reference}"
        );
        for r in list {
            assert_eq!(r.smsc.as_deref(), Some("FAKE"));
            assert!(r.at.is_some(), "{reference}: no time");
        }
    }
    assert_eq!(
        reports["alert-1.v1:84912345678"][0].to.as_deref(),
        Some("+84912345678")
    );

    // What the SMSC got: the Vietnamese text intact in UCS-2, the GSM-7 text as it was.
    let received = kannel.fakesmsc_received();
    assert_eq!(
        received.len(),
        9,
        "fakesmsc printed:\n{}",
        kannel.output("fakesmsc")
    );
    let find = |to: &str| {
        received
            .iter()
            .find(|m| m.1 == to)
            .unwrap_or_else(|| panic!("nothing to {to}"))
    };
    let (from, _, kind, data) = find("+84912345678");
    assert_eq!((from.as_str(), kind.as_str()), ("CANHBAO", "ucs-2"));
    assert_eq!(decode_fakesmsc_ucs2(data), UCS2_TEXT);
    let (_, _, kind, data) = find("+84912345679");
    assert_eq!((kind.as_str(), data.as_str()), ("text", GSM7_TEXT));
    let (_, _, kind, data) = find("+84912345670");
    assert_eq!((kind.as_str(), data.as_str()), ("text", queued.text.as_str()));
    assert!(
        received.iter().all(|m| m.1 != "+84912345677"),
        "the refused message went out"
    );

    eprintln!(
        "fakesmsc got {} messages, the UCS-2 one: {:?}; {} delivery reports, {delivered_first} of {} pairs with the 1 before the 8; batch of 6 took {batch_took:?}; whole test {:?}",
        received.len(),
        kannel
            .output("fakesmsc")
            .lines()
            .find(|l| l.contains("ucs-2"))
            .unwrap_or_default(),
        reports.values().map(Vec::len).sum::<usize>(),
        reports.len(),
        started.elapsed(),
    );
}
