//! `canhbao mosquitto-config`: Mosquitto 2.x's password file and ACL, made from the
//! receiver registry, so that the broker enforces identity (`docs/receiver-protocol.md`
//! §2): each receiver reads only its commune's alerts and writes only its own receipt,
//! heartbeat and status topics; the service writes alerts and reads what receivers send.
//!
//! Rendering is pure ([`render`], [`conf_snippet`]); [`write_config`] reads the registry
//! and replaces `DIR/passwd` and `DIR/acl`; [`service_password`] finds or makes the
//! service's own broker password.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use dispatch::Topics;
use domain::{CommuneCode, ProvinceCode, ReceiverId};

/// The service's username when `[mqtt] username` is empty.
pub const DEFAULT_SERVICE_USER: &str = "canhbao";

/// Where a generated service password is kept, under the data directory.
pub const SERVICE_PASSWORD_FILE: &str = "mqtt-service.password";

/// The topics the ACL grants: `[mqtt] topic_prefix` and the province, laid out as
/// [`dispatch::Topics`] lays them out.
#[derive(Debug, Clone)]
pub struct AclLayout {
    prefix: String,
    topics: Topics,
}

impl AclLayout {
    pub fn new(prefix: &str, province: ProvinceCode) -> Result<Self, dispatch::topics::TopicError> {
        Ok(Self {
            topics: Topics::new(prefix, province)?,
            prefix: prefix.to_owned(),
        })
    }

    /// Every alert of one commune: `{prefix}/{province}/{commune}/alerts/#`.
    fn commune_alerts(&self, commune: &CommuneCode) -> String {
        format!("{}/{}/{}/alerts/#", self.prefix, self.topics.province(), commune)
    }

    /// Every alert of the province: `{prefix}/{province}/+/alerts/#`.
    fn province_alerts(&self) -> String {
        format!("{}/{}/+/alerts/#", self.prefix, self.topics.province())
    }

    /// Every commune state of the province: `{prefix}/{province}/+/state`.
    fn province_states(&self) -> String {
        format!("{}/{}/+/state", self.prefix, self.topics.province())
    }
}

/// A registered receiver as the broker knows it: username = receiver id.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerReceiver {
    pub id: ReceiverId,
    pub commune: CommuneCode,
    /// `$7$...`, checked by [`api::fleet::is_mosquitto_hash`].
    pub password_hash: String,
}

/// The service's own broker account.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceAccount {
    pub username: String,
    pub password_hash: String,
}

impl ServiceAccount {
    /// Hashes `password` for `username` (see [`service_username`]).
    pub fn new(username: &str, password: &str) -> Result<Self> {
        Ok(Self {
            username: username.to_owned(),
            password_hash: salted_hash(password)?,
        })
    }
}

fn salted_hash(password: &str) -> Result<String> {
    let mut salt = [0u8; api::fleet::MOSQUITTO_SALT_LEN];
    getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no system randomness for a salt: {e}"))?;
    Ok(api::fleet::mosquitto_hash(
        password,
        &salt,
        api::fleet::MOSQUITTO_ITERATIONS,
    ))
}

/// The service's username: `[mqtt] username`, or [`DEFAULT_SERVICE_USER`] if it is empty.
/// It must be 1 to 64 of `A-Z a-z 0-9 . _ -`, so that it needs no quoting in either file.
pub fn service_username(configured: Option<&str>) -> Result<String> {
    let name = configured
        .filter(|u| !u.is_empty())
        .unwrap_or(DEFAULT_SERVICE_USER);
    let ok = name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        bail!("mqtt.username {name:?} must be 1 to 64 of A-Z a-z 0-9 . _ - for Mosquitto's files");
    }
    Ok(name.to_owned())
}

/// Splits the registry's receivers into those the broker gets and, for each one left
/// out, why (it can then not log in).
pub fn broker_receivers(records: &[store::RegisteredReceiver]) -> (Vec<BrokerReceiver>, Vec<String>) {
    let mut ok = Vec::new();
    let mut skipped = Vec::new();
    for r in records {
        let id = match ReceiverId::new(&r.receiver_id) {
            Ok(id) => id,
            Err(e) => {
                skipped.push(format!("receiver {:?}: {e}", r.receiver_id));
                continue;
            }
        };
        let commune = match CommuneCode::new(&r.commune) {
            Ok(c) => c,
            Err(e) => {
                skipped.push(format!("receiver {id}: commune {:?}: {e}", r.commune));
                continue;
            }
        };
        match &r.password_hash {
            Some(h) if api::fleet::is_mosquitto_hash(h) => ok.push(BrokerReceiver {
                id,
                commune,
                password_hash: h.clone(),
            }),
            Some(_) => skipped.push(format!(
                "receiver {id}: its stored password hash is not in Mosquitto's $7$ form; \
                 remove it and add it again for a new password"
            )),
            None => skipped.push(format!(
                "receiver {id} has no broker password (registered before passwords existed); \
                 remove it and add it again for one"
            )),
        }
    }
    (ok, skipped)
}

/// The two files' contents.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub passwd: String,
    pub acl: String,
}

/// Renders Mosquitto's password file (`user:hash` lines, the service first) and ACL.
pub fn render(
    layout: &AclLayout,
    service: &ServiceAccount,
    receivers: &[BrokerReceiver],
) -> Result<Rendered> {
    if let Some(r) = receivers.iter().find(|r| r.id.as_str() == service.username) {
        bail!(
            "the service's MQTT username {:?} is also a registered receiver's id; \
             set another [mqtt] username",
            r.id.as_str()
        );
    }
    if !api::fleet::is_mosquitto_hash(&service.password_hash) {
        bail!("the service's password hash is not in Mosquitto's $7$ form");
    }
    let mut passwd = format!("{}:{}\n", service.username, service.password_hash);
    for r in receivers {
        passwd.push_str(&format!("{}:{}\n", r.id, r.password_hash));
    }

    let t = &layout.topics;
    let mut acl = String::new();
    acl.push_str(
        "# Mosquitto ACL for canhbao, written by `canhbao mosquitto-config` from the receiver\n\
         # registry. Do not edit: run it again after adding or removing receivers, then reload\n\
         # Mosquitto (SIGHUP). Mosquitto 2 checks every publish and subscribe against it, and\n\
         # denies what no line grants.\n\
         #\n\
         # Not generated: automatic stations that push telemetry ({prefix}/telemetry/{station})\n\
         # get no access from this file.\n\n",
    );
    acl.push_str("# The service: publishes (and may read back) every alert and commune state of the\n");
    acl.push_str("# province and its key set; reads receipts, heartbeats, statuses and station telemetry.\n");
    acl.push_str(&format!("user {}\n", service.username));
    acl.push_str(&format!("topic readwrite {}\n", layout.province_alerts()));
    acl.push_str(&format!("topic readwrite {}\n", layout.province_states()));
    acl.push_str(&format!("topic readwrite {}\n", t.key_set()));
    for filter in t.inbound_filters() {
        acl.push_str(&format!("topic read {filter}\n"));
    }
    for r in receivers {
        acl.push_str(&format!(
            "\n# Receiver {}: reads its commune's alerts and state and the key set; writes only its\n# own topics.\n",
            r.id
        ));
        acl.push_str(&format!("user {}\n", r.id));
        acl.push_str(&format!("topic read {}\n", layout.commune_alerts(&r.commune)));
        acl.push_str(&format!("topic read {}\n", t.state(&r.commune)));
        acl.push_str(&format!("topic read {}\n", t.key_set()));
        acl.push_str(&format!("topic write {}\n", t.receipt(&r.id)));
        acl.push_str(&format!("topic write {}\n", t.heartbeat(&r.id)));
        acl.push_str(&format!("topic write {}\n", t.status(&r.id)));
    }
    Ok(Rendered { passwd, acl })
}

/// How many users other than `service_user` an ACL written here grants (its `user`
/// lines): the receivers a reload of it lets in.
pub fn receivers_in_acl(text: &str, service_user: &str) -> usize {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("user "))
        .filter(|u| u.trim() != service_user)
        .count()
}

/// The `mosquitto.conf` lines that use the files in `dir` (an absolute path) on
/// `listener` (a port, or a port and an address, as Mosquitto's `listener` takes them).
pub fn conf_snippet(dir: &Path, listener: &str) -> String {
    format!(
        "# Mosquitto 2.x for canhbao: only known users; the ACL says what each may do.\n\
         # Use TLS (listener 8883 with certfile and keyfile) for receivers on public networks.\n\
         per_listener_settings true\n\
         listener {listener}\n\
         allow_anonymous false\n\
         password_file {}\n\
         acl_file {}\n\
         # Receipts come back in bursts (two per receiver for each alert, all at once): the\n\
         # default queue of 1000 per client drops the rest for the service's connection,\n\
         # and they are then recovered only by the resend, 30 s later.\n\
         max_queued_messages 100000\n",
        dir.join("passwd").display(),
        dir.join("acl").display()
    )
}

/// What [`write_config`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// The absolute directory of the files.
    pub dir: PathBuf,
    pub receivers: usize,
    /// Registered receivers left out, and why.
    pub skipped: Vec<String>,
}

/// Replaces `dir/passwd` and `dir/acl` with the registry's receivers (registered, not
/// removed, with a password) and the service's account. Each file is written whole and
/// renamed into place, with mode 0640 and the group of the file it replaces, so that a
/// Mosquitto reloading at that moment reads the old file or the new one.
pub async fn write_config(
    store: &store::Store,
    layout: &AclLayout,
    service: &ServiceAccount,
    dir: &Path,
) -> Result<Written> {
    let records: Vec<store::RegisteredReceiver> =
        store.fleet().await?.into_iter().map(|f| f.receiver).collect();
    let (receivers, skipped) = broker_receivers(&records);
    let files = render(layout, service, &receivers)?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    write_replacing(&dir.join("passwd"), files.passwd.as_bytes(), 0o640)?;
    write_replacing(&dir.join("acl"), files.acl.as_bytes(), 0o640)?;
    Ok(Written {
        dir,
        receivers: receivers.len(),
        skipped,
    })
}

/// Where the service's password came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// `--service-password-file`.
    File(PathBuf),
    /// `[mqtt] password` (CANHBAO__MQTT__PASSWORD).
    Settings,
    /// `DATA_DIR/mqtt-service.password`, made by an earlier run.
    Kept(PathBuf),
    /// `DATA_DIR/mqtt-service.password`, made now (mode 0600).
    Created(PathBuf),
}

/// The service's broker password: from `file` if given; else `[mqtt] password` if set;
/// else `DATA_DIR/mqtt-service.password`, made on first use (24 random letters and
/// digits, mode 0600) and kept, so that running the command again keeps the service
/// logged in.
pub fn service_password(
    file: Option<&Path>,
    configured: Option<&str>,
    data_dir: &Path,
) -> Result<(String, PasswordSource)> {
    if let Some(path) = file {
        let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return Ok((
            one_line_password(&text, path)?,
            PasswordSource::File(path.to_owned()),
        ));
    }
    if let Some(p) = configured.filter(|p| !p.is_empty()) {
        return Ok((p.to_owned(), PasswordSource::Settings));
    }
    let path = data_dir.join(SERVICE_PASSWORD_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let mode = fs::metadata(&path)?.permissions().mode();
            if mode & 0o077 != 0 {
                bail!(
                    "{} is readable by other users (mode {:o}); run chmod 600 on it",
                    path.display(),
                    mode & 0o777
                );
            }
            Ok((one_line_password(&text, &path)?, PasswordSource::Kept(path)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let new = api::fleet::new_broker_password()
                .map_err(|e| anyhow::anyhow!("no system randomness for a password: {e}"))?;
            write_replacing(
                &path,
                format!("{}\n", secrecy::ExposeSecret::expose_secret(&new.password)).as_bytes(),
                0o600,
            )?;
            Ok((
                secrecy::ExposeSecret::expose_secret(&new.password).to_owned(),
                PasswordSource::Created(path),
            ))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The first line of a password file, which must be the whole of it.
fn one_line_password(text: &str, path: &Path) -> Result<String> {
    let p = text.strip_suffix('\n').unwrap_or(text);
    let p = p.strip_suffix('\r').unwrap_or(p);
    if p.is_empty() || p.chars().any(char::is_control) {
        bail!(
            "{} must hold one line: the password, without control characters",
            path.display()
        );
    }
    Ok(p.to_owned())
}

/// Writes `contents` to a new file with `mode` next to `path` and renames it over `path`.
/// A replaced file's group is kept, so that Mosquitto's group can still read the new one.
fn write_replacing(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let old_gid = fs::metadata(path).ok().map(|m| m.gid());
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    if let Some(gid) = old_gid {
        std::os::unix::fs::chown(&tmp, None, Some(gid)).with_context(|| {
            format!(
                "giving {} the group of {} (gid {gid})",
                tmp.display(),
                path.display()
            )
        })?;
    }
    fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn layout() -> AclLayout {
        AclLayout::new("canhbao/v1", ProvinceCode::new("20").unwrap()).unwrap()
    }

    fn hash(p: &str) -> String {
        api::fleet::mosquitto_hash(p, b"twelve bytes", 101)
    }

    fn receiver(id: &str, commune: &str) -> BrokerReceiver {
        BrokerReceiver {
            id: ReceiverId::new(id).unwrap(),
            commune: CommuneCode::new(commune).unwrap(),
            password_hash: hash(id),
        }
    }

    fn service() -> ServiceAccount {
        ServiceAccount {
            username: "canhbao".into(),
            password_hash: hash("service"),
        }
    }

    /// MQTT topic matching (filter against a topic name), for checking the ACL's lines.
    fn matches(filter: &str, topic: &str) -> bool {
        let mut f = filter.split('/');
        let mut t = topic.split('/');
        loop {
            match (f.next(), t.next()) {
                (Some("#"), _) => return true,
                (Some("+"), Some(_)) => {}
                (Some(a), Some(b)) if a == b => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    #[test]
    fn the_files_grant_each_receiver_its_commune_and_its_own_topics() {
        let files = render(
            &layout(),
            &service(),
            &[
                receiver("loa-06385-01", "06385"),
                receiver("loa-05977-01", "05977"),
            ],
        )
        .unwrap();
        assert_eq!(
            files.passwd,
            format!(
                "canhbao:{}\nloa-06385-01:{}\nloa-05977-01:{}\n",
                hash("service"),
                hash("loa-06385-01"),
                hash("loa-05977-01")
            )
        );
        let rules: Vec<&str> = files
            .acl
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .collect();
        assert_eq!(
            rules,
            [
                "user canhbao",
                "topic readwrite canhbao/v1/20/+/alerts/#",
                "topic readwrite canhbao/v1/20/+/state",
                "topic readwrite canhbao/v1/20/keys",
                "topic read canhbao/v1/receipts/+",
                "topic read canhbao/v1/heartbeat/+",
                "topic read canhbao/v1/status/+",
                "topic read canhbao/v1/telemetry/+",
                "user loa-06385-01",
                "topic read canhbao/v1/20/06385/alerts/#",
                "topic read canhbao/v1/20/06385/state",
                "topic read canhbao/v1/20/keys",
                "topic write canhbao/v1/receipts/loa-06385-01",
                "topic write canhbao/v1/heartbeat/loa-06385-01",
                "topic write canhbao/v1/status/loa-06385-01",
                "user loa-05977-01",
                "topic read canhbao/v1/20/05977/alerts/#",
                "topic read canhbao/v1/20/05977/state",
                "topic read canhbao/v1/20/keys",
                "topic write canhbao/v1/receipts/loa-05977-01",
                "topic write canhbao/v1/heartbeat/loa-05977-01",
                "topic write canhbao/v1/status/loa-05977-01",
            ]
        );
        assert!(
            files.acl.contains("telemetry"),
            "the file says stations are not generated"
        );
    }

    #[test]
    fn the_acl_follows_the_topic_layout_of_dispatch() {
        let l = layout();
        let c = CommuneCode::new("06385").unwrap();
        let other = CommuneCode::new("05977").unwrap();
        let alert = domain::AlertId::new("a-1").unwrap();
        let topic = l.topics.alert(&c, &alert);
        assert!(matches(&l.commune_alerts(&c), &topic));
        assert!(matches(&l.province_alerts(), &topic));
        assert!(!matches(&l.commune_alerts(&other), &topic));
        // What a receiver subscribes to is inside what it may read.
        let sub = l.topics.alerts_filter(&c);
        assert_eq!(sub.strip_suffix('+'), l.commune_alerts(&c).strip_suffix('#'));
    }

    #[test]
    fn receivers_without_a_usable_hash_are_left_out_and_named() {
        let rec = |id: &str, commune: &str, h: Option<String>| store::RegisteredReceiver {
            receiver_id: id.into(),
            commune: commune.into(),
            password_hash: h,
            trusted_keys: vec![],
            firmware: None,
            registered: Utc::now(),
            drills: false,
        };
        let (ok, skipped) = broker_receivers(&[
            rec("loa-a", "06385", Some(hash("loa-a"))),
            rec("loa-b", "06385", None),
            rec("loa-c", "06385", Some("plain".into())),
            rec("loa d", "06385", Some(hash("d"))),
            rec("loa-e", "6385", Some(hash("e"))),
        ]);
        assert_eq!(ok, [receiver("loa-a", "06385")]);
        assert_eq!(skipped.len(), 4, "{skipped:?}");
        for (s, who) in skipped.iter().zip(["loa-b", "loa-c", "loa d", "loa-e"]) {
            assert!(s.contains(who), "{s}");
        }
    }

    #[test]
    fn the_service_needs_a_plain_username_of_its_own() {
        assert_eq!(service_username(None).unwrap(), "canhbao");
        assert_eq!(service_username(Some("")).unwrap(), "canhbao");
        assert_eq!(
            service_username(Some("canhbao-1.prod")).unwrap(),
            "canhbao-1.prod"
        );
        for bad in ["a b", "a:b", "a\nuser x", "é", &"x".repeat(65)] {
            assert!(service_username(Some(bad)).is_err(), "{bad:?}");
        }
        let mut s = service();
        s.username = "loa-a".into();
        let err = render(&layout(), &s, &[receiver("loa-a", "06385")]).unwrap_err();
        assert!(err.to_string().contains("also a registered receiver"), "{err}");
    }

    #[test]
    fn a_service_account_hashes_its_password_with_a_fresh_salt() {
        let a = ServiceAccount::new("canhbao", "pw").unwrap();
        let b = ServiceAccount::new("canhbao", "pw").unwrap();
        assert!(api::fleet::is_mosquitto_hash(&a.password_hash));
        assert_ne!(a.password_hash, b.password_hash);
        assert!(!a.password_hash.contains("pw$"));
    }

    #[test]
    fn the_service_password_comes_from_the_file_the_settings_or_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let given = dir.path().join("given");
        fs::write(&given, "from-file\n").unwrap();
        assert_eq!(
            service_password(Some(&given), Some("ignored"), dir.path()).unwrap(),
            ("from-file".into(), PasswordSource::File(given.clone()))
        );
        assert_eq!(
            service_password(None, Some("from-env"), dir.path()).unwrap(),
            ("from-env".into(), PasswordSource::Settings)
        );
        let (made, source) = service_password(None, None, dir.path()).unwrap();
        let kept = dir.path().join(SERVICE_PASSWORD_FILE);
        assert_eq!(source, PasswordSource::Created(kept.clone()));
        assert_eq!(made.len(), api::fleet::BROKER_PASSWORD_LEN);
        assert_eq!(fs::metadata(&kept).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(
            service_password(None, None, dir.path()).unwrap(),
            (made, PasswordSource::Kept(kept.clone()))
        );
        fs::set_permissions(&kept, fs::Permissions::from_mode(0o644)).unwrap();
        let err = service_password(None, None, dir.path()).unwrap_err().to_string();
        assert!(err.contains("readable by other users"), "{err}");
        fs::write(&given, "two\nlines\n").unwrap();
        assert!(service_password(Some(&given), None, dir.path()).is_err());
    }

    #[test]
    fn rewriting_keeps_the_mode_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acl");
        write_replacing(&path, b"one\n", 0o640).unwrap();
        write_replacing(&path, b"two\n", 0o640).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        assert!(!dir.path().join("acl.tmp").exists());
    }

    #[test]
    fn the_snippet_points_mosquitto_at_both_files() {
        let s = conf_snippet(Path::new("/etc/mosquitto/canhbao"), "1883");
        for line in [
            "listener 1883",
            "allow_anonymous false",
            "password_file /etc/mosquitto/canhbao/passwd",
            "acl_file /etc/mosquitto/canhbao/acl",
        ] {
            assert!(s.lines().any(|l| l == line), "{line} in {s}");
        }
    }
}
