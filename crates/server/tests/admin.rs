//! Administrative commands act on the deployment their operator means, or refuse: run as
//! the `canhbao` binary, as an operator runs them from a shell.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

fn canhbao(data_dir: &Path, args: &[&str]) -> (bool, String) {
    // The deployment's flags follow the command's first word (`users --config-dir .. add`).
    let out = Command::new(env!("CARGO_BIN_EXE_canhbao"))
        .arg(args[0])
        .arg("--config-dir")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(&args[1..])
        .env_remove("CANHBAO_ENV")
        .output()
        .expect("canhbao runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn an_admin_command_on_a_deployment_that_does_not_exist_refuses_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("var");
    for args in [
        &["users", "add", "test.doc", "--role", "officer"][..],
        &["receivers", "add", "--id", "loa-1", "--commune", "06385"][..],
        &["token-create", "--role", "viewer", "--label", "x"][..],
        &["keys", "list"][..],
        &[
            "mosquitto-config",
            "--out",
            tmp.path().join("mosq").to_str().unwrap(),
        ][..],
    ] {
        let (ok, text) = canhbao(&data, args);
        assert!(!ok, "{args:?} succeeded: {text}");
        assert!(text.contains("no database at"), "{args:?}: {text}");
        assert!(text.contains("CANHBAO_ENV=production"), "{args:?}: {text}");
    }
    assert!(!data.join("canhbao.db").exists(), "a database was created");
    assert!(!data.join("keyring").exists(), "a keyring was created");
    assert!(
        !data.join("mqtt-service.password").exists(),
        "a service password was created"
    );
    assert!(!tmp.path().join("mosq").exists());
}

#[test]
fn mosquitto_config_never_writes_an_acl_without_receivers_over_one_with_some_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("var");
    std::fs::create_dir_all(&data).unwrap();
    // A deployment whose database registers no receiver (the wrong one, say).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = store::Store::open(&format!("sqlite://{}", data.join("canhbao.db").display()))
            .await
            .unwrap();
        store.close().await;
    });
    let out = tmp.path().join("mosq");
    std::fs::create_dir_all(&out).unwrap();
    let live = "user canhbao\ntopic readwrite canhbao/v1/20/+/alerts/#\n\nuser loa-06385-01\ntopic read canhbao/v1/20/06385/alerts/#\n";
    std::fs::write(out.join("acl"), live).unwrap();
    let (ok, text) = canhbao(&data, &["mosquitto-config", "--out", out.to_str().unwrap()]);
    assert!(!ok, "{text}");
    assert!(text.contains("grants 1") && text.contains("--force"), "{text}");
    assert!(
        text.contains("canhbao: using config"),
        "it says which deployment it used: {text}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("acl")).unwrap(),
        live,
        "the live ACL is untouched"
    );
    let (ok, text) = canhbao(
        &data,
        &["mosquitto-config", "--out", out.to_str().unwrap(), "--force"],
    );
    assert!(ok, "{text}");
    assert!(text.contains("0 receivers"), "{text}");
}

/// Retiring a key revokes it in the key set, and every receiver drops what it signed: an
/// operator who retires the old key while its alerts are live silences them. Refused,
/// naming the alerts and when the last expires, unless `--force` (a stolen key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retiring_a_key_whose_alerts_are_live_is_refused_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("var");
    let port = testkit::kannel::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = tmp.path().join("serve.log");
    let service = common::spawn_service(
        &log,
        &[
            ("CANHBAO__SERVICE__DATA_DIR", data.display().to_string()),
            ("CANHBAO__HTTP__LISTEN", format!("127.0.0.1:{port}")),
            (
                "CANHBAO__MQTT__LISTEN",
                format!("127.0.0.1:{}", testkit::kannel::free_port()),
            ),
        ],
    );
    let http = reqwest::Client::new();
    common::wait_ready(&http, &base, &log).await;
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let r = http
        .post(format!("{base}/api/v1/bulletins"))
        .bearer_auth(token.trim())
        .header("content-type", "application/cap+xml")
        .body(common::bulletin("retire-guard-1", "flood", 2))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    let alert = body["alerts"][0]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned();
    service.kill();

    let list = |text: &str| -> Vec<serde_json::Value> {
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let (ok, text) = canhbao(&data, &["keys", "list"]);
    assert!(ok, "{text}");
    let old = list(&text).into_iter().find(|k| k["state"] == "active").unwrap()["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (ok, text) = canhbao(&data, &["keys", "generate", "--activate"]);
    assert!(ok, "{text}");

    let (ok, text) = canhbao(&data, &["keys", "retire", &old]);
    assert!(!ok, "retired while its alert is live: {text}");
    assert!(
        text.contains(&alert) && text.contains("--force") && text.contains("1 live alert"),
        "{text}"
    );
    let (_, text) = canhbao(&data, &["keys", "list"]);
    assert!(
        list(&text)
            .iter()
            .any(|k| k["key_id"] == old.as_str() && k["state"] == "valid"),
        "the refused retirement changed the keyring: {text}"
    );

    let (ok, text) = canhbao(&data, &["keys", "retire", &old, "--force"]);
    assert!(ok, "{text}");
    assert!(
        list(&text)
            .iter()
            .any(|k| k["key_id"] == old.as_str() && k["state"] == "retired"),
        "{text}"
    );
}

/// `check-config` reads the TLS files the service would serve with: a path that does not
/// exist, or a key the service's user cannot use, is a problem before the service fails
/// to start on it.
#[test]
fn check_config_refuses_tls_files_it_cannot_read() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |cert: &Path, key: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_canhbao"))
            .arg("check-config")
            .arg("--config-dir")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config"))
            .arg("--data-dir")
            .arg(tmp.path())
            .env_remove("CANHBAO_ENV")
            .env("CANHBAO__HTTP__TLS_CERT_FILE", cert)
            .env("CANHBAO__HTTP__TLS_KEY_FILE", key)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let missing = tmp.path().join("nonexistent.pem");
    let (ok, text) = run(&missing, &missing);
    assert!(!ok, "{text}");
    assert!(
        text.contains("nonexistent.pem") && !text.contains("configuration OK"),
        "{text}"
    );
    // A file that holds no certificate.
    let junk = tmp.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let (ok, text) = run(&junk, &junk);
    assert!(!ok && text.contains("junk.pem"), "{text}");
}

/// Options go where an operator types them: the deployment's flags after the last word of
/// the command as well as after the first, and the service's own flags only under `serve`.
#[test]
fn deployment_flags_follow_any_word_and_service_flags_belong_to_serve() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("var");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_canhbao"))
            .args(args)
            .env_remove("CANHBAO_ENV")
            .env(
                "CANHBAO_CONFIG_DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../../config"),
            )
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    // Either place, the same refusal about the same (missing) deployment: the flag was read.
    for args in [
        &[
            "receivers",
            "add",
            "--id",
            "loa-1",
            "--commune",
            "06385",
            "--data-dir",
        ][..],
        &[
            "receivers",
            "--data-dir",
            "X",
            "add",
            "--id",
            "loa-1",
            "--commune",
            "06385",
        ][..],
    ] {
        let mut args = args.to_vec();
        let d = data.to_str().unwrap();
        if args.last() == Some(&"--data-dir") {
            args.push(d);
        } else {
            args[2] = d;
        }
        let (ok, text) = run(&args);
        assert!(!ok, "{text}");
        assert!(
            text.contains(&format!("no database at {}", data.join("canhbao.db").display())),
            "{args:?}: {text}"
        );
    }
    let (ok, help) = run(&["receivers", "add", "--help"]);
    assert!(ok, "{help}");
    assert!(
        help.contains("--data-dir") && !help.contains("--http") && !help.contains("--no-demo"),
        "{help}"
    );
    let (ok, help) = run(&["serve", "--help"]);
    assert!(
        ok && help.contains("--http") && help.contains("--mqtt-listen") && help.contains("--no-demo"),
        "{help}"
    );
}
