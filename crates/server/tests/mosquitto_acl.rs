#![allow(clippy::unwrap_used)]
//! `canhbao mosquitto-config` against a real Mosquitto (`/usr/sbin/mosquitto`, 2.x): the
//! password file it writes logs receivers in, and its ACL keeps each receiver to its own
//! commune's alerts and its own topics. Skipped (passes) when Mosquitto is not installed.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use canhbao_server::mosquitto::{self, AclLayout, ServiceAccount};
use domain::{CommuneCode, ProvinceCode};
use mqtt::{BrokerUrl, InboundMessage, MqttHandle, MqttSettings};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";
const MOSQUITTO_PASSWD: &str = "/usr/bin/mosquitto_passwd";
const PREFIX: &str = "canhbao/v1";

/// Kills the broker when the test ends, passed or failed.
struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn start_broker(dir: &Path, port: u16) -> Broker {
    // The generated snippet on a loopback listener; `user root` only keeps a broker
    // started by root from dropping to a user that cannot read the temporary directory.
    let conf = format!(
        "{}user root\npersistence false\nlog_dest stderr\nlog_type all\n",
        mosquitto::conf_snippet(dir, &format!("{port} 127.0.0.1"))
    );
    let conf_path = dir.join("mosquitto.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let log = std::fs::File::create(dir.join("mosquitto.log")).unwrap();
    let child = Command::new(MOSQUITTO)
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut broker = Broker(child);
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = broker.0.try_wait().unwrap() {
            panic!("mosquitto exited with {status}: {}", broker_log(dir));
        }
        assert!(
            Instant::now() < deadline,
            "mosquitto did not listen: {}",
            broker_log(dir)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    broker
}

fn broker_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("mosquitto.log")).unwrap_or_default()
}

struct Client {
    handle: MqttHandle,
    inbound: mpsc::Receiver<InboundMessage>,
    stop: CancellationToken,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn client(port: u16, client_id: &str, username: &str, password: &str, subscriptions: &[String]) -> Client {
    let (handle, driver, inbound) = mqtt::connect(MqttSettings {
        broker: BrokerUrl {
            host: "127.0.0.1".into(),
            port,
            tls: false,
        },
        client_id: client_id.into(),
        username: Some(username.into()),
        password: Some(password.into()),
        keep_alive: Duration::from_secs(30),
        persistent_session: false,
        subscriptions: subscriptions.to_vec(),
        last_will: None,
        on_connect: None,
        tls: Default::default(),
    });
    let stop = CancellationToken::new();
    tokio::spawn(driver.run(stop.clone()));
    Client {
        handle,
        inbound,
        stop,
    }
}

async fn connected(c: &Client, who: &str, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !c.handle.is_connected() {
        assert!(
            Instant::now() < deadline,
            "{who} could not log in: {}",
            broker_log(dir)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every message `c` gets until one on `marker` has come and then `quiet` has passed
/// (the broker keeps each publisher's order, so what was published before the marker
/// would have come before it).
async fn collect_until(c: &mut Client, marker: &str, quiet: Duration) -> Vec<InboundMessage> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !got.iter().any(|m: &InboundMessage| m.topic == marker) {
        match tokio::time::timeout_at(deadline, c.inbound.recv()).await {
            Ok(Some(m)) => got.push(m),
            _ => panic!("no message on {marker}; got {:?}", topics(&got)),
        }
    }
    let end = tokio::time::Instant::now() + quiet;
    while let Ok(Some(m)) = tokio::time::timeout_at(end, c.inbound.recv()).await {
        got.push(m);
    }
    got
}

fn topics(msgs: &[InboundMessage]) -> Vec<&str> {
    msgs.iter().map(|m| m.topic.as_str()).collect()
}

/// Publishes to `topic` every 100 ms until `to` has a message on it: proves that `to`'s
/// subscriptions are in place before the test relies on them.
async fn until_subscribed(from: &Client, to: &mut Client, topic: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        from.handle
            .publish(topic, b"probe".to_vec(), false)
            .await
            .unwrap();
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), to.inbound.recv()).await
            && m.topic == topic
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no subscription of {topic} took effect"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_enforces_the_generated_passwords_and_acl() {
    if testkit::skip_without(MOSQUITTO, Path::new(MOSQUITTO).exists()) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = store::Store::open(&format!("sqlite://{}", tmp.path().join("canhbao.db").display()))
        .await
        .unwrap();
    let communes = ["06385", "05977"].map(|c| CommuneCode::new(c).unwrap());
    let mut passwords = std::collections::HashMap::new();
    for (id, commune) in [("loa-a", "06385"), ("loa-b", "05977"), ("loa-gone", "06385")] {
        let (mut out, mut note) = (Vec::new(), Vec::new());
        canhbao_server::tools::receivers_add(
            &store,
            &communes,
            id,
            commune,
            None,
            vec![],
            false,
            &mut out,
            &mut note,
        )
        .await
        .unwrap();
        let password = String::from_utf8(out).unwrap().trim_end().to_owned();
        assert_eq!(password.len(), 24, "stdout holds the password alone");
        assert!(String::from_utf8(note).unwrap().contains("only time"));
        passwords.insert(id, password);
    }
    canhbao_server::tools::receivers_remove(&store, "loa-gone", &mut Vec::new())
        .await
        .unwrap();

    let layout = AclLayout::new(PREFIX, ProvinceCode::new("20").unwrap()).unwrap();
    let service = ServiceAccount::new("canhbao", "service-secret").unwrap();
    let conf_dir = tmp.path().join("mosquitto");
    let written = mosquitto::write_config(&store, &layout, &service, &conf_dir)
        .await
        .unwrap();
    assert_eq!(written.receivers, 2, "the removed receiver is left out");
    let passwd = std::fs::read_to_string(written.dir.join("passwd")).unwrap();
    assert!(!passwd.contains("loa-gone"), "{passwd}");
    assert!(
        !passwd.contains(passwords["loa-a"].as_str()),
        "only hashes are written"
    );

    let port = free_port();
    let _broker = start_broker(&written.dir, port);
    let dir = written.dir.as_path();

    let t = dispatch::Topics::new(PREFIX, ProvinceCode::new("20").unwrap()).unwrap();
    let a_id = domain::ReceiverId::new("loa-a").unwrap();
    let b_id = domain::ReceiverId::new("loa-b").unwrap();
    let (own, other) = (&communes[0], &communes[1]);
    let alert = |c: &CommuneCode, id: &str| t.alert(c, &domain::AlertId::new(id).unwrap());

    // (a) a wrong password, and a removed receiver's real one, are refused.
    let wrong = client(port, "rx-wrong", "loa-a", "not-the-password", &[]);
    let gone = client(port, "rx-gone", "loa-gone", &passwords["loa-gone"], &[]);

    // The service observes alerts and what receivers send; receiver A subscribes to its
    // commune as the protocol says, and also tries the other commune and everything.
    let mut observer_subs = t.inbound_filters().to_vec();
    observer_subs.push(format!("{PREFIX}/20/+/alerts/#"));
    let mut observer = client(
        port,
        "canhbao-observer",
        "canhbao",
        "service-secret",
        &observer_subs,
    );
    let service_pub = client(port, "canhbao-1", "canhbao", "service-secret", &[]);
    let mut a = client(
        port,
        "rx-loa-a",
        "loa-a",
        &passwords["loa-a"],
        &[t.alerts_filter(other), "#".into(), t.alerts_filter(own)],
    );
    connected(&observer, "the service (observer)", dir).await;
    connected(&service_pub, "the service", dir).await;
    connected(&a, "receiver A", dir).await;
    until_subscribed(&service_pub, &mut observer, &alert(other, "probe")).await;
    until_subscribed(&service_pub, &mut a, &alert(own, "probe")).await;

    // A writes its own receipt, then what it may not write, then its own heartbeat.
    let publish = |c: &Client, topic: String, body: &'static str| {
        let h = c.handle.clone();
        async move { h.publish(&topic, body.as_bytes().to_vec(), false).await.unwrap() }
    };
    publish(&a, t.receipt(&a_id), "a's receipt").await;
    publish(&a, alert(own, "forged-own"), "forged alert").await; // (b)
    publish(&a, alert(other, "forged-other"), "forged alert").await; // (b)
    publish(&a, t.receipt(&b_id), "a posing as b").await; // (d)
    publish(&a, t.status(&b_id), "a posing as b").await; // (d)
    publish(&a, t.heartbeat(&a_id), "a's heartbeat").await;
    // The service publishes to the other commune, then to A's.
    publish(&service_pub, alert(other, "real-other"), "real alert").await; // (c)
    publish(&service_pub, alert(own, "real-own"), "real alert").await; // (c)

    let seen = collect_until(&mut observer, &t.heartbeat(&a_id), Duration::from_secs(1)).await;
    let seen = topics(&seen);
    assert!(
        seen.contains(&t.receipt(&a_id).as_str()),
        "A may write its receipt: {seen:?}"
    );
    assert!(seen.contains(&alert(other, "real-other").as_str()), "{seen:?}");
    for forbidden in [
        alert(own, "forged-own"),
        alert(other, "forged-other"),
        t.receipt(&b_id),
        t.status(&b_id),
    ] {
        assert!(
            !seen.contains(&forbidden.as_str()),
            "A wrote {forbidden}: {seen:?}"
        );
    }

    let got = collect_until(&mut a, &alert(own, "real-own"), Duration::from_secs(1)).await;
    let got = topics(&got);
    assert!(
        got.iter()
            .all(|topic| topic.starts_with(&format!("{PREFIX}/20/06385/alerts/"))),
        "A read beyond its commune's alerts: {got:?}"
    );

    assert!(!wrong.handle.is_connected(), "a wrong password was accepted");
    assert!(!gone.handle.is_connected(), "a removed receiver logged in");
    let log = broker_log(dir);
    assert!(
        log.contains("not authorised"),
        "mosquitto refused the logins: {log}"
    );
    assert!(log.contains("Denied PUBLISH from rx-loa-a"), "{log}");
    store.close().await;
}

#[test]
fn mosquitto_passwd_and_canhbao_hash_alike() {
    if testkit::skip_without(MOSQUITTO_PASSWD, Path::new(MOSQUITTO_PASSWD).exists()) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("passwd");
    let status = Command::new(MOSQUITTO_PASSWD)
        .args(["-b", "-c"])
        .arg(&file)
        .args(["loa-a", "Zx9 pässwörd:$"])
        .status()
        .unwrap();
    assert!(status.success());
    let line = std::fs::read_to_string(&file).unwrap();
    let hash = line.trim_end().strip_prefix("loa-a:").unwrap();
    let parts: Vec<&str> = hash.split('$').collect();
    assert_eq!(parts[..3], ["", "7", "101"], "{hash}");
    use base64::Engine as _;
    let salt = base64::engine::general_purpose::STANDARD
        .decode(parts[3])
        .unwrap();
    assert_eq!(salt.len(), api::fleet::MOSQUITTO_SALT_LEN);
    assert_eq!(
        api::fleet::mosquitto_hash("Zx9 pässwörd:$", &salt, api::fleet::MOSQUITTO_ITERATIONS),
        hash
    );
}
