//! The repository's `docker-compose.yml`, run for real: a project per test, brought up under its own
//! name and torn down (`down -v`) when the handle drops.
//!
//! # Design
//!
//! Tests drive the compose CLI exactly as the README tells users to (`docker-compose` 1.29 when it is
//! installed, else Compose v2's `docker compose`; `IT_COMPOSE=v1|v2` picks one), so what is tested
//! is the file users run. The
//! compose file publishes fixed host ports (the DataNodes advertise them), so only one project runs
//! at a time: [`Compose::up`] holds a process-wide lock for the handle's life.
//!
//! Where the Docker daemon answers: `DOCKER_HOST` if set, else the socket `.ci/docker` starts
//! (`/var/lib/hdfs-ingest-docker/docker.sock`) if it exists, else docker's default. Images: the
//! `HADOOP_IMAGE` and `HDFS_INGEST_IMAGE` variables if set; else the images `.ci/docker` builds
//! (`hdfs-ingest/hadoop:3.4.1`, `hdfs-ingest/connector:ci`) if the daemon has them.
//!
//! When no daemon answers, [`Compose::up`] returns `None` after printing the exact error, and the
//! test skips — unless `IT_REQUIRE_DOCKER=1` (CI), where that is an error.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The socket `.ci/docker` starts its daemon on.
pub const CI_SOCKET: &str = "/var/lib/hdfs-ingest-docker/docker.sock";

static ONE_PROJECT: Mutex<()> = Mutex::new(());

/// One compose project of the repository's compose file.
pub struct Compose {
    project: String,
    env: Vec<(String, String)>,
    _one: MutexGuard<'static, ()>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn docker_host() -> Option<String> {
    if let Ok(h) = std::env::var("DOCKER_HOST") {
        return Some(h);
    }
    Path::new(CI_SOCKET)
        .exists()
        .then(|| format!("unix://{CI_SOCKET}"))
}

fn docker(host: &Option<String>) -> Command {
    let mut c = Command::new("docker");
    if let Some(h) = host {
        c.env("DOCKER_HOST", h);
    }
    c
}

/// Why docker cannot be used here, or `None` when the daemon answers.
fn docker_error(host: &Option<String>) -> Option<String> {
    match docker(host)
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
    {
        Err(e) => Some(format!("docker: {e}")),
        Ok(o) if !o.status.success() => Some(format!(
            "docker info (DOCKER_HOST={}): {}",
            host.as_deref().unwrap_or("default"),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => None,
    }
}

fn image_exists(host: &Option<String>, image: &str) -> bool {
    docker(host)
        .args(["image", "inspect", image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Compose {
    /// `docker compose -p <project> [--profile <profile>] up -d` with `env` (e.g. `SENDER_COUNT`),
    /// waiting for the health checks the file's `depends_on` names. `None` (after printing why) when
    /// there is no Docker daemon and `IT_REQUIRE_DOCKER` is not `1`.
    pub fn up(
        project: &str,
        profile: Option<&str>,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Option<Compose>> {
        let one = ONE_PROJECT.lock().unwrap_or_else(|p| p.into_inner());
        let host = docker_host();
        if let Some(err) = docker_error(&host) {
            if std::env::var("IT_REQUIRE_DOCKER").is_ok_and(|v| v == "1") {
                bail!("IT_REQUIRE_DOCKER=1 but the Docker daemon cannot be used: {err}");
            }
            eprintln!("skipping: the Docker daemon cannot be used: {err}");
            return Ok(None);
        }
        let mut all = Vec::new();
        if let Some(h) = &host {
            all.push(("DOCKER_HOST".to_string(), h.clone()));
        }
        for (var, ci_image) in [
            ("HADOOP_IMAGE", "hdfs-ingest/hadoop:3.4.1"),
            ("HDFS_INGEST_IMAGE", "hdfs-ingest/connector:ci"),
        ] {
            if std::env::var_os(var).is_none() && image_exists(&host, ci_image) {
                all.push((var.to_string(), ci_image.to_string()));
            }
        }
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let c = Compose {
            project: project.into(),
            env: all,
            _one: one,
        };
        // A project left by an interrupted run.
        c.down();
        let mut args = vec![];
        if let Some(p) = profile {
            args.extend(["--profile", p]);
        }
        args.extend(["up", "-d"]);
        c.run(&args).context("compose up")?;
        Ok(Some(c))
    }

    /// The compose command of this project: `IT_COMPOSE=v1` (`docker-compose`) or `IT_COMPOSE=v2`
    /// (`docker compose`, the CLI plugin of Compose v2 and its successors) if set, else
    /// `docker-compose` if installed, else `docker compose`.
    pub fn command(&self, args: &[&str]) -> Command {
        let v1 = match std::env::var("IT_COMPOSE").as_deref() {
            Ok("v1") => true,
            Ok("v2") => false,
            _ => Command::new("docker-compose")
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
        };
        let mut c = if v1 {
            Command::new("docker-compose")
        } else {
            let mut c = Command::new("docker");
            c.arg("compose");
            c
        };
        c.arg("-f")
            .arg(repo_root().join("docker-compose.yml"))
            .args(["-p", &self.project])
            .args(args)
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs a compose command; its stdout, or an error with its stderr.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        self.run_with(args, &[])
    }

    /// [`Compose::run`] with extra environment variables (e.g. `PRIMARY_FLAGS=--standby`).
    pub fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<String> {
        let mut c = self.command(args);
        c.envs(env.iter().copied());
        let o: Output = c.output().with_context(|| format!("compose {args:?}"))?;
        if !o.status.success() {
            bail!(
                "compose {args:?} failed ({}): {}{}",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        for (k, v) in &self.env {
            if k == "DOCKER_HOST" {
                c.env(k, v);
            }
        }
        c
    }

    /// The container id of a service (its first container).
    pub fn container(&self, service: &str) -> anyhow::Result<String> {
        let id = self.run(&["ps", "-q", service])?;
        id.lines()
            .next()
            .map(str::to_string)
            .with_context(|| format!("no container for {service}"))
    }

    /// Waits for a service's container to exit; its exit code.
    pub fn wait_exit(&self, service: &str, timeout: Duration) -> anyhow::Result<i32> {
        let id = self.container(service)?;
        let deadline = Instant::now() + timeout;
        loop {
            let o = self
                .docker()
                .args([
                    "inspect",
                    "--format",
                    "{{.State.Status}} {{.State.ExitCode}}",
                    &id,
                ])
                .output()?;
            let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if let Some(code) = s.strip_prefix("exited ") {
                return Ok(code.parse()?);
            }
            if Instant::now() > deadline {
                bail!(
                    "{service} did not exit within {timeout:?} (state {s}):\n{}",
                    self.logs(service)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Waits until a service's health check passes.
    pub fn wait_healthy(&self, service: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let id = self.container(service)?;
            let o = self
                .docker()
                .args(["inspect", "--format", "{{.State.Health.Status}}", &id])
                .output()?;
            if String::from_utf8_lossy(&o.stdout).trim() == "healthy" {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{service} not healthy within {timeout:?}:\n{}",
                    self.logs(service)
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// A service's log (stdout and stderr), or the error getting it.
    pub fn logs(&self, service: &str) -> String {
        match self.command(&["logs", "--no-color", service]).output() {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("compose logs {service}: {e}"),
        }
    }

    /// SIGKILL to a service's container (`docker kill`).
    pub fn kill(&self, service: &str) -> anyhow::Result<()> {
        let id = self.container(service)?;
        let st = self
            .docker()
            .args(["kill", &id])
            .stdout(Stdio::null())
            .status()?;
        if !st.success() {
            bail!("docker kill {service} failed");
        }
        Ok(())
    }

    /// The NameNode's cluster id (changes only if HDFS was formatted again).
    pub fn cluster_id(&self) -> anyhow::Result<String> {
        let v = self.run(&[
            "exec",
            "-T",
            "namenode",
            "cat",
            "/data/namenode/current/VERSION",
        ])?;
        v.lines()
            .find_map(|l| l.strip_prefix("clusterID="))
            .map(str::to_string)
            .context("no clusterID in the NameNode's VERSION")
    }

    /// `hdfs-ingest verify` in a container of `service` (its volume holds the manifest) on the
    /// project's network: the report line, or an error with the output when it is not clean.
    pub fn verify(
        &self,
        service: &str,
        manifest: &str,
        output: &str,
        config: &str,
    ) -> anyhow::Result<String> {
        let out = self.run(&[
            "run",
            "--rm",
            "--no-deps",
            service,
            "verify",
            "--manifest",
            manifest,
            "--output",
            output,
            "--config",
            config,
        ])?;
        let report = out
            .lines()
            .find(|l| l.starts_with("verify:"))
            .with_context(|| format!("no verify line in {out}"))?;
        Ok(report.to_string())
    }

    fn down(&self) {
        let _ = self
            .command(&[
                "--profile",
                "none",
                "--profile",
                "active-standby",
                "down",
                "-v",
                "--remove-orphans",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        self.down();
    }
}
