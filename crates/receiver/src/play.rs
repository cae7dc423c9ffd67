//! Playing an alert through an external command, such as `espeak-ng -v vi` or a script
//! that drives the commune's amplifier.
//!
//! The command is split on whitespace and started without a shell. Each rendition is one
//! run of it, with the text to read out on its standard input; a rendition succeeds when
//! the command exits with status 0. The command runs in a process group of its own, so
//! that stopping it (an emergency interrupts, the alert expires, the receiver shuts down)
//! also stops whatever it started, such as a pipeline inside a script.

use std::fmt;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A program and its arguments, from a command line split on whitespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayCommand {
    program: String,
    args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlayCommandError {
    #[error("the play command {0:?} names no program")]
    Empty(String),
}

impl PlayCommand {
    /// Splits `line` on whitespace: the first word is the program, the rest its
    /// arguments. There is no quoting, since there is no shell: a command that needs one
    /// belongs in a script.
    pub fn parse(line: &str) -> Result<Self, PlayCommandError> {
        let mut words = line.split_whitespace().map(str::to_owned);
        let program = words
            .next()
            .ok_or_else(|| PlayCommandError::Empty(line.to_owned()))?;
        Ok(Self {
            program,
            args: words.collect(),
        })
    }

    pub fn program(&self) -> &str {
        &self.program
    }
}

impl fmt::Display for PlayCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for a in &self.args {
            write!(f, " {a}")?;
        }
        Ok(())
    }
}

/// How a playback ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every rendition played.
    Done,
    /// A rendition could not start or exited with a failure; the reason says which.
    Failed(String),
    /// The deadline (the alert's `expires`) came first; the rendition under way was cut.
    Expired,
    /// Stopped on request; the rendition under way was cut.
    Stopped,
}

/// Plays `text` through `cmd` `renditions` times, `interval` apart, stopping at
/// `deadline` or when `stop` is cancelled. `rendered` is called after each rendition that
/// succeeded, so that the caller can report the first at once.
pub async fn play(
    cmd: &PlayCommand,
    text: &str,
    renditions: u8,
    interval: Duration,
    deadline: Instant,
    stop: &CancellationToken,
    mut rendered: impl FnMut(),
) -> Outcome {
    for i in 0..renditions {
        if i > 0 {
            tokio::select! {
                _ = stop.cancelled() => return Outcome::Stopped,
                _ = tokio::time::sleep_until(deadline) => return Outcome::Expired,
                _ = tokio::time::sleep(interval) => {}
            }
        }
        match render_once(cmd, text, deadline, stop).await {
            Ok(()) => rendered(),
            Err(end) => return end,
        }
    }
    Outcome::Done
}

/// One run of the command.
async fn render_once(
    cmd: &PlayCommand,
    text: &str,
    deadline: Instant,
    stop: &CancellationToken,
) -> Result<(), Outcome> {
    let mut command = tokio::process::Command::new(&cmd.program);
    command
        .args(&cmd.args)
        .stdin(Stdio::piped())
        // The agent's standard output carries the alerts it prints; the command's
        // diagnostics go to the same standard error as the agent's log.
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    #[cfg(unix)]
    command.process_group(0);
    let mut child = command
        .spawn()
        .map_err(|e| Outcome::Failed(format!("cannot start {:?}: {e}", cmd.program)))?;
    let mut group = Group(child.id());
    let stdin = child.stdin.take();
    let feed = async move {
        // A command that does not read its input, or exits early, closes the pipe: its
        // exit status decides, not the write.
        if let Some(mut stdin) = stdin {
            let _ = stdin.write_all(text.as_bytes()).await;
            let _ = stdin.shutdown().await;
        }
    };
    let ended = tokio::select! {
        (_, status) = async { tokio::join!(feed, child.wait()) } => Ok(status),
        _ = stop.cancelled() => Err(Outcome::Stopped),
        _ = tokio::time::sleep_until(deadline) => Err(Outcome::Expired),
    };
    match ended {
        Ok(status) => {
            // The child is reaped, so its group id may be reused: leave the group alone.
            group.0 = None;
            match status {
                Ok(s) if s.success() => Ok(()),
                Ok(s) => Err(Outcome::Failed(format!("{:?} failed: {s}", cmd.program))),
                Err(e) => Err(Outcome::Failed(format!("waiting for {:?}: {e}", cmd.program))),
            }
        }
        Err(end) => {
            // Kill the group while its leader is still unreaped, then reap the leader.
            group.kill();
            let _ = child.kill().await;
            Err(end)
        }
    }
}

/// The process group of a running command, killed when dropped unless its leader has
/// been reaped (a dropped playback must not leave audio playing).
struct Group(Option<u32>);

impl Group {
    fn kill(&mut self) {
        if let Some(pid) = self.0.take() {
            kill_group(pid);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(unix)]
fn kill_group(pid: u32) {
    use rustix::process::{Pid, Signal, kill_process_group};
    // Never 0 or 1: those would address our own group or every process.
    if let Some(pid) = i32::try_from(pid).ok().filter(|p| *p > 1).and_then(Pid::from_raw) {
        let _ = kill_process_group(pid, Signal::KILL);
    }
}

#[cfg(not(unix))]
fn kill_group(_pid: u32) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_on_whitespace_without_a_shell() {
        let c = PlayCommand::parse("  espeak-ng -v   vi ").unwrap();
        assert_eq!(c.program(), "espeak-ng");
        assert_eq!(c.args, ["-v", "vi"]);
        assert_eq!(c.to_string(), "espeak-ng -v vi");
        let c = PlayCommand::parse("sh -c 'a b'").unwrap();
        assert_eq!(c.args, ["-c", "'a", "b'"], "quotes are not interpreted");
        assert!(matches!(
            PlayCommand::parse(" \t"),
            Err(PlayCommandError::Empty(_))
        ));
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    async fn run(cmd: &str, times: u8, interval_ms: u64, deadline: Instant) -> (Outcome, u32) {
        let mut n = 0;
        let out = play(
            &PlayCommand::parse(cmd).unwrap(),
            "Cảnh báo lũ\n",
            times,
            Duration::from_millis(interval_ms),
            deadline,
            &CancellationToken::new(),
            || n += 1,
        )
        .await;
        (out, n)
    }

    #[tokio::test]
    async fn each_rendition_that_exits_zero_counts() {
        assert_eq!(run("cat", 3, 10, far()).await, (Outcome::Done, 3));
        assert_eq!(run("true", 1, 0, far()).await, (Outcome::Done, 1));
    }

    #[tokio::test]
    async fn a_command_that_fails_or_cannot_start_says_why() {
        let (out, n) = run("false", 2, 0, far()).await;
        assert_eq!(n, 0);
        assert!(
            matches!(&out, Outcome::Failed(r) if r.contains("\"false\" failed: exit status: 1")),
            "{out:?}"
        );
        let (out, n) = run("/nonexistent/canhbao-player", 1, 0, far()).await;
        assert_eq!(n, 0);
        assert!(
            matches!(&out, Outcome::Failed(r) if r.starts_with("cannot start \"/nonexistent/canhbao-player\"")),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn the_deadline_cuts_a_rendition_or_the_wait_between_two() {
        let soon = || Instant::now() + Duration::from_millis(300);
        let started = std::time::Instant::now();
        assert_eq!(run("sleep 30", 1, 0, soon()).await, (Outcome::Expired, 0));
        assert_eq!(run("true", 3, 30_000, soon()).await, (Outcome::Expired, 1));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn stopping_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("play.sh");
        let pidfile = dir.path().join("pid");
        // A shell that starts a child of its own: killing only the shell would leave
        // the `sleep` (the audio, in real life) running.
        std::fs::write(&script, format!("echo $$ > {}\nsleep 30\n", pidfile.display())).unwrap();
        let cmd = PlayCommand::parse(&format!("sh {}", script.display())).unwrap();
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        let pidfile2 = pidfile.clone();
        tokio::spawn(async move {
            while !pidfile2.exists() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            stopper.cancel();
        });
        let out = play(&cmd, "x", 1, Duration::ZERO, far(), &stop, || {}).await;
        assert_eq!(out, Outcome::Stopped);
        let pgid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        // Give the kernel a moment, then no process may remain in that group.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(group_members(pgid), Vec::<i32>::new());
    }

    /// Processes whose process group is `pgid`, from /proc (Linux).
    fn group_members(pgid: i32) -> Vec<i32> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // Fields after the parenthesised name: state, ppid, pgrp, ...
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // A zombie is dead already, waiting to be reaped by its parent.
            if fields.get(2).and_then(|f| f.parse::<i32>().ok()) == Some(pgid) && fields.first() != Some(&"Z")
            {
                found.push(pid);
            }
        }
        found
    }
}
