//! Administrative commands act on the deployment their operator means, or refuse: run as
//! the `canhbao` binary, as an operator runs them from a shell.

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
