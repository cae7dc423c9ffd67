//! What `deploy/` ships, checked with the tools that will read it: the systemd unit with
//! `systemd-analyze verify` (when `CANHBAO_TEST_SYSTEMD_ANALYZE` names it; `.ci/run` sets
//! it), and the production profile with its secrets given as credential files, the way
//! the unit's `LoadCredential=` hands them over, through the real binary.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_systemd_unit_verifies_and_keeps_its_hardening() {
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/canhbao.service")).unwrap();
    // The hardening the deployment promises is there, whatever systemd says of it.
    for line in [
        "User=canhbao",
        "NoNewPrivileges=true",
        "ProtectSystem=strict",
        "ProtectHome=true",
        "PrivateTmp=true",
        "PrivateDevices=true",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "LoadCredential=CANHBAO__DATABASE__URL:/etc/canhbao/credentials/database-url",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing from the unit");
    }
    assert!(
        !unit.contains("PASSWORD=") && !unit.contains("postgres://"),
        "no secret in the unit"
    );
    let Ok(analyze) = std::env::var("CANHBAO_TEST_SYSTEMD_ANALYZE") else {
        eprintln!("CANHBAO_TEST_SYSTEMD_ANALYZE is not set: systemd-analyze verify runs in CI");
        return;
    };
    // Verify needs the program to exist: point the unit at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canhbao.service");
    std::fs::write(
        &path,
        unit.replace("/opt/canhbao/bin/canhbao", env!("CARGO_BIN_EXE_canhbao")),
    )
    .unwrap();
    let out = Command::new(&analyze).arg("verify").arg(&path).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A value systemd cannot read is only a warning to it: any word from it fails here.
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}

#[test]
fn the_production_profile_takes_its_secrets_from_credential_files() {
    let data = tempfile::tempdir().unwrap();
    let creds = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", data.path().join("canhbao.db").display());
    std::fs::write(creds.path().join("CANHBAO__DATABASE__URL"), format!("{db}\n")).unwrap();
    std::fs::write(
        creds.path().join("CANHBAO__MQTT__PASSWORD"),
        "a-broker-password\n",
    )
    .unwrap();
    let check = |extra: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_canhbao"));
        c.arg("check-config")
            .arg("--config-dir")
            .arg(repo().join("config"))
            .env("CANHBAO_ENV", "production")
            .env("CANHBAO__SERVICE__DATA_DIR", data.path())
            .env("CREDENTIALS_DIRECTORY", creds.path())
            .env_remove("CANHBAO__DATABASE__URL")
            .env_remove("CANHBAO__MQTT__PASSWORD");
        for (k, v) in extra {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let ok = check(&[]);
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        out.contains("configuration OK") && out.contains("profile        Production"),
        "{out}"
    );
    assert!(
        !out.contains("a-broker-password"),
        "a secret never reaches the output"
    );
    // The same secret in the environment as well is refused, without showing either.
    let twice = check(&[("CANHBAO__MQTT__PASSWORD", "another")]);
    let err = String::from_utf8_lossy(&twice.stderr);
    assert!(!twice.status.success());
    assert!(err.contains("CANHBAO__MQTT__PASSWORD is set both"), "{err}");
    assert!(
        !err.contains("another") && !err.contains("a-broker-password"),
        "{err}"
    );
}
