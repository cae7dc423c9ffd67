//! MQTT over TLS with client certificates: a Mosquitto of the test's own with a TLS
//! listener that requires a certificate signed by the test's CA (made with `openssl`),
//! and a plain loopback listener for the receivers. The service connects with
//! `mqtts://` and `[mqtt] ca_file`, `client_cert_file`, `client_key_file`; without a
//! certificate it is refused. Runs where Mosquitto is (`CANHBAO_TEST_MQTT_URL` set).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use canhbao_tests::{Broker, TestApp, external_broker};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
pub(crate) fn certificates(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=canhbao test CA",
    ]);
    openssl(dir, &ca);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    // Extensions make them X.509 v3, which webpki requires.
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    for (name, cn, ext) in [
        ("server", "/CN=localhost", Some("server.ext")),
        ("client", "/CN=canhbao-1", Some("client.ext")),
    ] {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", cn]);
        openssl(dir, &req);
        let mut sign = vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
        ];
        if let Some(ext) = ext {
            sign.extend(["-extfile", ext]);
        }
        openssl(dir, &sign);
    }
}

struct Mosquitto(Child);

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_reaches_mosquitto_over_tls_with_its_client_certificate() {
    if external_broker().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    // Mosquitto started as root drops to its own user: let it read the test's files
    // (throwaway keys of a throwaway CA).
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            std::fs::set_permissions(entry.unwrap().path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let [tls_port, plain_port] = testkit::kannel::free_ports::<2>();
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("mosquitto.conf"),
        format!(
            "per_listener_settings false\nallow_anonymous true\n\
             listener {plain_port} 127.0.0.1\n\
             listener {tls_port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n\
             require_certificate true\ntls_version tlsv1.2\n"
        ),
    )
    .unwrap();
    let _mosquitto = Mosquitto(
        Command::new(testkit::kannel::find_program("mosquitto").expect("mosquitto is installed"))
            .arg("-c")
            .arg(dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let file = |n: &str| dir.path().join(n).display().to_string();
    let (ca, cert, key) = (file("ca.pem"), file("client.pem"), file("client.key"));
    let url = format!("mqtts://127.0.0.1:{tls_port}");

    // With it, alerts flow: receivers on the plain listener get them, verified.
    let mut app = TestApp::spawn_with(
        Broker::External(url.clone()),
        &[
            ("CANHBAO__MQTT__CA_FILE", ca.as_str()),
            ("CANHBAO__MQTT__CLIENT_CERT_FILE", cert.as_str()),
            ("CANHBAO__MQTT__CLIENT_KEY_FILE", key.as_str()),
        ],
    )
    .await
    .unwrap();
    app.wait_for("/readyz", Duration::from_secs(15), |r| r["broker"] == "ok")
        .await
        .unwrap();
    app.broker = mqtt::BrokerUrl::parse(&format!("mqtt://127.0.0.1:{plain_port}")).unwrap();
    let mut rx = app.start_receiver("06385", "loa-tls").await.unwrap();
    let alert_id = app.issue_bulletin("LU-TLS").await.unwrap();
    loop {
        match rx.next(Duration::from_secs(15)).await.unwrap() {
            canhbao_receiver::ReceiverEvent::Played(p) => {
                assert_eq!(p.id, alert_id);
                break;
            }
            canhbao_receiver::ReceiverEvent::Rejected { alert_id, reason } => {
                panic!("{alert_id} rejected: {reason}")
            }
            _ => {}
        }
    }
    rx.stop().await;
    app.app.stop().await;

    // Without a client certificate, the broker refuses the service: it never gets ready.
    let refused = TestApp::spawn_with(
        Broker::External(format!("mqtts://127.0.0.1:{tls_port}")),
        &[("CANHBAO__MQTT__CA_FILE", ca.as_str())],
    )
    .await;
    let Err(e) = refused else {
        panic!("the service got ready without its client certificate");
    };
    assert!(e.to_string().contains("503"), "{e}");
}
