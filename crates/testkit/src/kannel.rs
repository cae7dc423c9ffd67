//! A real Kannel 1.4.5 for tests (Debian's `kannel` and `kannel-extras`): bearerbox,
//! smsbox and the fake SMSC peer `fakesmsc`, all on free loopback ports, configured as
//! `shared/data/sms/kannel-loopback-fakesmsc.conf`. What fakesmsc prints is what an SMSC
//! got. `.ci/run` installs Kannel; without it, [`installed`] is `None` and tests say so.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::fs::File;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::http::url_decode;

/// fakesmsc, from kannel-extras.
pub const FAKESMSC: &str = "/usr/lib/kannel/test/fakesmsc";

/// bearerbox and smsbox, when Kannel is installed (fakesmsc must then be there too). Without
/// Kannel, `None` (the test says it skipped), or a panic under CI ([`crate::skip_without`]).
pub fn installed() -> Option<(PathBuf, PathBuf)> {
    let found = find_program("bearerbox").zip(find_program("smsbox"));
    if crate::skip_without("Kannel (apt-get install kannel kannel-extras)", found.is_some()) {
        return None;
    }
    let found = found?;
    assert!(
        Path::new(FAKESMSC).is_file(),
        "kannel-extras is missing: no {FAKESMSC}"
    );
    Some(found)
}

pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free ports on loopback. Each listener is held until all are chosen: ports
/// taken one after another can come back the same (the OS hands out a port just released
/// again), and a Kannel given one port twice does not start ("Address already in use").
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<StdListener> = (0..N)
        .map(|_| StdListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

/// A running Kannel; its processes are killed when it goes, and its logs shown if the test
/// failed.
pub struct Kannel {
    dir: tempfile::TempDir,
    pub conf: PathBuf,
    admin_port: u16,
    pub smsc_port: u16,
    sendsms_port: u16,
    children: Vec<(&'static str, Child)>,
}

impl Kannel {
    /// The configuration of `shared/data/sms/kannel-loopback-fakesmsc.conf`, on free ports
    /// and in a temporary folder.
    pub fn configure(dlr_port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().display().to_string();
        let [admin_port, box_port, smsc_port, sendsms_port] = free_ports::<4>();
        let conf = format!(
            r#"group = core
admin-port = {admin_port}
admin-password = adminpw
status-password = statuspw
admin-interface = 127.0.0.1
admin-allow-ip = "127.0.0.1"
smsbox-port = {box_port}
smsbox-interface = 127.0.0.1
box-allow-ip = "127.0.0.1"
log-file = "{run}/bearerbox.log"
log-level = 0
dlr-storage = internal

group = smsc
smsc = fake
smsc-id = FAKE
host = 127.0.0.1
port = {smsc_port}
connect-allow-ip = "127.0.0.1"

group = smsbox
bearerbox-host = 127.0.0.1
sendsms-port = {sendsms_port}
sendsms-interface = 127.0.0.1
log-file = "{run}/smsbox.log"
log-level = 0
access-log = "{run}/access.log"
# Delivery reports that cannot be handed over (the service is restarting) are tried again.
http-request-retry = 30
http-queue-delay = 1

group = sendsms-user
username = tester
password = foobar
user-allow-ip = "127.0.0.1"
max-messages = 10
concatenation = true

group = sms-service
keyword = default
catch-all = true
max-messages = 0
get-url = "http://127.0.0.1:{dlr_port}/mo?from=%p&to=%P&text=%a&smsc=%i&ts=%t"
"#
        );
        let path = dir.path().join("kannel.conf");
        std::fs::write(&path, conf).unwrap();
        Self {
            conf: path,
            dir,
            admin_port,
            smsc_port,
            sendsms_port,
            children: Vec::new(),
        }
    }

    pub fn spawn(&mut self, name: &'static str, program: &Path, args: &[&str]) {
        let out = |suffix: &str| File::create(self.dir.path().join(format!("{name}.{suffix}"))).unwrap();
        let child = Command::new(program)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out("stdout"))
            .stderr(out("stderr"))
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        self.children.push((name, child));
    }

    pub fn output(&self, name: &str) -> String {
        let read = |suffix: &str| {
            std::fs::read_to_string(self.dir.path().join(format!("{name}.{suffix}"))).unwrap_or_default()
        };
        read("stdout") + &read("stderr")
    }

    pub fn sendsms_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.sendsms_port)
    }

    /// bearerbox's status page, or nothing while it does not answer.
    pub async fn status(&self, http: &reqwest::Client) -> String {
        let url = format!(
            "http://127.0.0.1:{}/status.txt?password=statuspw",
            self.admin_port
        );
        match http.get(url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    pub async fn wait_for_status(&self, http: &reqwest::Client, what: &str, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.status(http).await.contains(needle) {
                return;
            }
            assert!(Instant::now() < deadline, "{what} not ready after 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// fakesmsc's "Got message N: <from to type data>" lines, as (from, to, type, data).
    pub fn fakesmsc_received(&self) -> Vec<(String, String, String, String)> {
        self.output("fakesmsc")
            .lines()
            .filter_map(|line| {
                let rest = &line[line.find("Got message ")?..];
                let inner = rest[rest.find(": <")? + 3..].strip_suffix('>')?;
                let mut parts = inner.splitn(4, ' ').map(str::to_owned);
                Some((parts.next()?, parts.next()?, parts.next()?, parts.next()?))
            })
            .collect()
    }
}

impl Kannel {
    /// Whole messages as the SMSC got them, with the parts of a concatenated message
    /// (fakesmsc's `udh` lines) joined in order, URL-decoded, and UCS-2 decoded; a message
    /// whose parts have not all come is left out. Returns (to, parts, text).
    pub fn messages(&self) -> Vec<(String, usize, String)> {
        let mut whole = Vec::new();
        // (to, concatenation reference) -> (parts expected, [(part number, bytes)]); a
        // group is complete, and taken out, once all its parts came (the 8-bit reference
        // comes round again after 256 messages).
        let mut partial: std::collections::BTreeMap<(String, u8), Parts> = std::collections::BTreeMap::new();
        for (_, to, kind, data) in self.fakesmsc_received() {
            match kind.as_str() {
                "ucs-2" => whole.push((to, 1, decode_fakesmsc_ucs2(&data))),
                "udh" => {
                    let Some((udh, text)) = data.split_once(" data ") else {
                        continue;
                    };
                    // 05 00 03 ref total seq: the 8-bit concatenation element.
                    let udh = url_decode(udh);
                    let [5, 0, 3, reference, total, seq] = udh[..] else {
                        continue;
                    };
                    let key = (to.clone(), reference);
                    let entry = partial.entry(key.clone()).or_insert((total, Vec::new()));
                    entry.1.push((seq, url_decode(text)));
                    if entry.1.len() == usize::from(total)
                        && let Some((_, parts)) = partial.remove(&key)
                    {
                        whole.push(joined(to, parts));
                    }
                }
                _ => whole.push((to, 1, data)),
            }
        }
        // Groups still missing parts are not whole messages (yet): callers wait for them.
        whole
    }
}

/// A concatenated message from its parts: UCS-2 parts are UTF-16BE (with zero bytes);
/// GSM-7 ones come as text.
fn joined(to: String, mut parts: Vec<(u8, Vec<u8>)>) -> (String, usize, String) {
    parts.sort();
    let n = parts.len();
    let text: Vec<u8> = parts.into_iter().flat_map(|(_, b)| b).collect();
    let text = if text.contains(&0) {
        let units: Vec<u16> = text
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]))
            .collect();
        String::from_utf16_lossy(&units)
    } else {
        String::from_utf8_lossy(&text).into_owned()
    };
    (to, n, text)
}

/// A concatenated message being put together: the parts announced, and those seen.
type Parts = (u8, Vec<(u8, Vec<u8>)>);

impl Drop for Kannel {
    fn drop(&mut self) {
        // smsbox first, bearerbox last; SIGKILL: nothing of theirs needs to survive.
        for (_, child) in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for name in ["bearerbox.log", "smsbox.log", "access.log"] {
                let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
                let tail: Vec<_> = text.lines().rev().take(40).collect();
                eprintln!("--- {name} (last lines, newest first)\n{}", tail.join("\n"));
            }
            eprintln!("--- fakesmsc\n{}", self.output("fakesmsc"));
        }
    }
}

impl Kannel {
    /// Starts bearerbox and smsbox and waits until both answer.
    pub async fn start_boxes(&mut self, bearerbox: &Path, smsbox: &Path, http: &reqwest::Client) {
        let conf = self.conf.display().to_string();
        self.spawn("bearerbox", bearerbox, &["-v", "1", &conf]);
        self.wait_for_status(http, "bearerbox", "SMSC connections").await;
        self.spawn("smsbox", smsbox, &["-v", "1", &conf]);
        self.wait_for_status(http, "smsbox", "smsbox:").await;
    }

    /// Starts the fake SMSC (no mobile-originated messages) and waits for its link.
    pub async fn start_fakesmsc(&mut self, http: &reqwest::Client) {
        let port = self.smsc_port.to_string();
        self.spawn(
            "fakesmsc",
            Path::new(FAKESMSC),
            &[
                "-H",
                "127.0.0.1",
                "-r",
                &port,
                "-i",
                "1",
                "-m",
                "0",
                "x y text nop",
            ],
        );
        self.wait_for_status(http, "the fake SMSC link", "(online").await;
    }

    /// SIGKILLs one of its processes (`bearerbox`, `smsbox` or `fakesmsc`): a crash.
    pub fn kill(&mut self, name: &str) {
        for (n, child) in &mut self.children {
            if *n == name {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// fakesmsc prints UCS-2 as URL-encoded UTF-16BE.
pub fn decode_fakesmsc_ucs2(data: &str) -> String {
    let units: Vec<u16> = url_decode(data)
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]))
        .collect();
    String::from_utf16(&units).unwrap()
}
