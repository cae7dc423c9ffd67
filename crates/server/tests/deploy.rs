//! What `deploy/` ships, checked with the tools that will read it: the systemd unit with
//! `systemd-analyze verify` (when `CANHBAO_TEST_SYSTEMD_ANALYZE` names it; `.ci/run` sets
//! it), and the production profile with its secrets given as credential files, the way
//! the unit's `LoadCredential=` hands them over, through the real binary.

#![allow(clippy::unwrap_used)]

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
        "LoadCredential=CANHBAO__DATABASE__URL:/etc/canhbao/credentials/CANHBAO__DATABASE__URL",
        "Environment=CANHBAO_CONFIG_DIR=/opt/canhbao/config",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing from the unit");
    }
    assert!(
        !unit.contains("PASSWORD=") && !unit.contains("postgres://"),
        "no secret in the unit"
    );
    let Some(analyze) = testkit::service("CANHBAO_TEST_SYSTEMD_ANALYZE") else {
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

/// `KEY=VALUE` lines of an environment file (comments and blanks skipped).
fn env_file(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[test]
fn the_trial_compose_file_is_valid_and_its_settings_load() {
    let deploy = repo().join("deploy");
    let compose = std::fs::read_to_string(deploy.join("compose.yaml")).unwrap();
    for service in ["postgres:", "mosquitto:", "kannel:", "canhbao-a:", "canhbao-b:"] {
        assert!(compose.contains(&format!("\n  {service}\n")), "{service} missing");
    }
    // Two instances on one broker: each with a client id of its own.
    assert!(
        compose.contains("CANHBAO__MQTT__CLIENT_ID: canhbao-a")
            && compose.contains("CANHBAO__MQTT__CLIENT_ID: canhbao-b")
    );
    // The image builds both binaries and serves the config it copies.
    let dockerfile = std::fs::read_to_string(deploy.join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("--bin canhbao --bin canhbao-receiver"));
    assert!(dockerfile.contains("COPY config /opt/canhbao/config"));
    // The service and an admin command run in the container (`docker compose exec`) read
    // the same config directory.
    assert!(dockerfile.contains("CANHBAO_CONFIG_DIR=/opt/canhbao/config"));
    assert!(dockerfile.contains(r#"ENTRYPOINT ["canhbao", "serve"]"#));
    assert!(
        dockerfile.contains("USER canhbao"),
        "the service never runs as root"
    );

    // The canhbao service's settings, with its secrets as files, pass check-config.
    let data = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    for name in [
        "CANHBAO_SECRET_KANNEL",
        "CANHBAO_SECRET_DLR",
        "CANHBAO__DATABASE__URL",
    ] {
        assert!(
            compose.contains(&format!("    - {name}\n")),
            "{name} is not given to a service"
        );
        let value = if name == "CANHBAO__DATABASE__URL" {
            "postgres://canhbao:0123456789abcdef@postgres:5432/canhbao\n"
        } else {
            "0123456789abcdef0123456789abcdef\n"
        };
        std::fs::write(secrets.path().join(name), value).unwrap();
    }
    let mut check = Command::new(env!("CARGO_BIN_EXE_canhbao"));
    check
        .arg("check-config")
        .arg("--config-dir")
        .arg(repo().join("config"))
        .env("CANHBAO_ENV", "production")
        .env("CANHBAO__SERVICE__DATA_DIR", data.path())
        .env("CREDENTIALS_DIRECTORY", secrets.path());
    for (k, v) in env_file(&deploy.join("compose/canhbao.env")) {
        assert!(
            !k.contains("PASSWORD") && !k.starts_with("CANHBAO_SECRET"),
            "{k}: secrets are files"
        );
        check.env(k, v);
    }
    let out = check.output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("gateways kannel"), "{said}");
    assert!(
        !said.contains("0123456789abcdef"),
        "check-config never shows the database password: {said}"
    );

    let Some(tool) = testkit::service("CANHBAO_TEST_COMPOSE") else {
        return;
    };
    // No engine runs here: `config` parses and validates the file, which is what can be
    // checked on this machine.
    let mut words = tool.split_whitespace();
    let out = Command::new(words.next().unwrap())
        .args(words)
        .arg("-f")
        .arg(deploy.join("compose.yaml"))
        .args(["config", "-q"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{tool} config: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
