//! A `nats-server` of its own for a test, with JetStream (which NATS's MQTT needs) and an
//! `mqtt` block, on free loopback ports and a temporary store. `.ci/run` points
//! `CANHBAO_TEST_NATS_URL` at the machine's NATS, which tells tests that NATS is there to
//! use; the test then starts this one beside it, because the machine's has no MQTT.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::kannel::{find_program, free_ports};

/// A running nats-server; killed when dropped (its log shown if the test failed).
pub struct Nats {
    child: Child,
    dir: tempfile::TempDir,
    /// `mqtt://127.0.0.1:PORT`: NATS's MQTT listener.
    pub mqtt_url: String,
}

/// Whether tests should run against NATS (`CANHBAO_TEST_NATS_URL` is set).
pub fn wanted() -> bool {
    crate::service("CANHBAO_TEST_NATS_URL").is_some()
}

impl Nats {
    /// Starts nats-server with JetStream and MQTT; panics if it does not listen in 10 s.
    pub fn start() -> Nats {
        let program = find_program("nats-server")
            .expect("CANHBAO_TEST_NATS_URL is set but nats-server is not installed");
        let dir = tempfile::tempdir().unwrap();
        let [port, mqtt] = free_ports::<2>();
        let conf = dir.path().join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "server_name: canhbao_test\nlisten: 127.0.0.1:{port}\n\
                 jetstream {{ store_dir: \"{}\" }}\n\
                 mqtt {{ listen: 127.0.0.1:{mqtt}\n  ack_wait: \"30s\"\n}}\n",
                dir.path().join("js").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("nats.log")).unwrap();
        let child = Command::new(program)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let nats = Nats {
            child,
            dir,
            mqtt_url: format!("mqtt://127.0.0.1:{mqtt}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", mqtt)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server's MQTT did not listen:\n{}",
                nats.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        nats
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<_> = log.lines().rev().take(40).collect();
            eprintln!("--- nats-server (last lines, newest first)\n{}", tail.join("\n"));
        }
    }
}
