//! `cargo run -p it --release --bin soak -- --duration 30m [--kill-every 20s] [--seed N]`: the soak
//! (`it::soak`): one node under well-behaved and hostile clients with periodic SIGKILLs, then a verify
//! of every well-behaved manifest. Prints the summary table; exits 1 if anything did not hold.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use it::soak::{run, SoakOptions};

#[derive(Parser, Debug)]
#[command(
    name = "soak",
    about = "A node under mixed well-behaved and hostile clients and SIGKILLs"
)]
struct Args {
    /// How long the clients run (then the senders finish, the node is stopped and everything verified).
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// About how often the node is SIGKILLed and started again (each wait this × [0.5, 1.5)); 0: never.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    kill_every: Duration,
    #[arg(long, default_value_t = 0x50a4_2026)]
    seed: u64,
    /// Where the node's data, output, logs and manifests go (default: a new temporary directory, kept).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The hdfs-ingest binary (default: the one of this build profile, built if needed).
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// Framed well-behaved sender slots (raw slots: --raw-senders).
    #[arg(long, default_value_t = 3)]
    senders: usize,
    #[arg(long, default_value_t = 1)]
    raw_senders: usize,
    /// Images per second of each sender.
    #[arg(long, default_value_t = 40.0)]
    rate: f64,
    #[arg(long, default_value_t = 128)]
    max_connections: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<ExitCode> {
    let a = Args::parse();
    let dir = match a.dir {
        Some(d) => d,
        None => tempfile::Builder::new().prefix("soak-").tempdir()?.keep(),
    };
    let node_bin = a.node_bin.unwrap_or_else(it::bin);
    let mut o = SoakOptions::new(a.duration, dir.clone(), node_bin);
    o.kill_every = (!a.kill_every.is_zero()).then_some(a.kill_every);
    o.seed = a.seed;
    o.senders.seed = a.seed;
    o.senders.framed = a.senders;
    o.senders.raw = a.raw_senders;
    o.senders.rate = a.rate;
    o.senders.raw_rate = a.rate;
    o.max_connections = a.max_connections;
    eprintln!(
        "soak: {:?}, a kill about every {:?}, seed {}, in {}",
        o.duration,
        o.kill_every,
        o.seed,
        dir.display()
    );
    let report = run(o).await?;
    print!("{}", report.table());
    let violations = report.violations();
    for v in &violations {
        println!("FAILED: {v}");
    }
    println!(
        "soak: {} ({})",
        if violations.is_empty() {
            "OK"
        } else {
            "FAILED"
        },
        dir.display()
    );
    Ok(if violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
