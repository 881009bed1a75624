//! A node process whose log the test reads: for starts that may refuse, wait for disk space or fail.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::{bin, signal, stdout_lines};

/// A node process whose log (its stderr) the test reads: for starts that may refuse, wait or fail.
pub struct LoggedNode {
    pub child: Child,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    ready: mpsc::Receiver<Vec<String>>,
    /// The addresses of its `ready` line, once it printed one.
    pub addresses: Option<Vec<String>>,
}

impl LoggedNode {
    /// Spawns `hdfs-ingest run <args> --config <config>` (RUST_LOG=warn unless set) and returns at once.
    pub fn spawn(config: &Path, args: &[&str]) -> anyhow::Result<LoggedNode> {
        let mut cmd = Command::new(bin());
        cmd.arg("run")
            .args(args)
            .arg("--config")
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        let mut child = cmd.spawn().context("spawn hdfs-ingest run")?;
        let stderr = child.stderr.take().context("stderr")?;
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("node| {l}");
                let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
                s.push_str(&l);
                s.push('\n');
            }
        });
        let (tx, ready) = mpsc::channel();
        let lines = stdout_lines(&mut child)?;
        std::thread::spawn(move || {
            for l in lines {
                if let Some(rest) = l.strip_prefix("ready ") {
                    let _ = tx.send(rest.split_whitespace().map(String::from).collect());
                }
            }
        });
        Ok(LoggedNode {
            child,
            log,
            ready,
            addresses: None,
        })
    }

    /// Waits up to `timeout` for the `ready` line; false if the node exited or is still not ready.
    pub fn wait_ready(&mut self, timeout: Duration) -> bool {
        if self.addresses.is_some() {
            return true;
        }
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(a) = self.ready.recv_timeout(Duration::from_millis(100)) {
                self.addresses = Some(a);
                return true;
            }
            if self.exited().is_some() {
                return false;
            }
        }
        false
    }

    /// Its exit status, if it exited (then its log is complete a moment later).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let st = self.child.try_wait().ok().flatten();
        if st.is_some() {
            std::thread::sleep(Duration::from_millis(100));
        }
        st
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(st) = self.exited() {
                return Some(st);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits up to `timeout` for a log line containing `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// SIGTERM, then a clean exit within 60 s.
    pub fn stop(mut self) -> anyhow::Result<()> {
        signal(self.child.id(), "TERM")?;
        match self.wait_exit(Duration::from_secs(60)) {
            Some(st) if st.success() => Ok(()),
            Some(st) => bail!("node exited with {st} after SIGTERM"),
            None => bail!("node did not stop within 60 s of SIGTERM"),
        }
    }

    /// SIGKILL, then reap.
    pub fn kill9(mut self) -> anyhow::Result<()> {
        signal(self.child.id(), "KILL")?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for LoggedNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
