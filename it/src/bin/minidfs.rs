//! `cargo run -p it --bin minidfs [-- --datanodes N]`: a real MiniDFSCluster for benchmarks and manual runs.
//! Prints `READY hdfs://127.0.0.1:<port>` and serves until Ctrl-C (or its stdin closes).

use it::minidfs::{MiniDfs, MiniDfsOptions};

fn main() -> anyhow::Result<()> {
    let mut opts = MiniDfsOptions::default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        match (args[i].as_str(), args.get(i + 1)) {
            ("--datanodes", Some(n)) => opts.datanodes = n.parse()?,
            ("--port", Some(p)) => opts.port = p.parse()?,
            ("--replication", Some(r)) => opts.replication = Some(r.parse()?),
            (other, _) => anyhow::bail!(
                "unknown argument {other} (use --datanodes N, --port P, --replication R)"
            ),
        }
        i += 2;
    }
    let dfs = MiniDfs::start(opts)?;
    println!("READY {}", dfs.url());
    // Serve until our stdin closes or we are interrupted (the JVM is killed when `dfs` drops).
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line)? > 0 {
        line.clear();
    }
    drop(dfs);
    Ok(())
}
