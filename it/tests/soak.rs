//! The soak for CI: the same code as `cargo run -p it --release --bin soak`, for two minutes
//! (`IT_SOAK_SECONDS` sets another length, `IT_SEED` the seed). One node with strategy `none` and a
//! local output, framed and raw `send push` processes, every kind of hostile client, a SIGKILL about
//! every 20 s; then `hdfs-ingest verify` of every well-behaved manifest, and the node's peak memory
//! and descriptors held against the bounds of `it::soak` (budget + per connection; connections +
//! reserve).

use std::time::Duration;

use it::pair::env_u64;
use it::soak::{run, SoakOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_minutes_of_hostile_clients_and_sigkills_lose_and_duplicate_nothing_within_bounds(
) -> anyhow::Result<()> {
    let seconds = env_u64("IT_SOAK_SECONDS", 120);
    let dir = tempfile::tempdir()?;
    let mut o = SoakOptions::new(
        Duration::from_secs(seconds),
        dir.path().to_path_buf(),
        it::bin(),
    );
    o.seed = env_u64("IT_SEED", o.seed);
    o.senders.seed = o.seed;
    // Fewer and smaller images than the long run: the debug build hashes slowly at verify, and this
    // machine's filesystem takes ~5 ms to unlink a synced file when the directory is removed.
    o.senders.rate = 6.0;
    o.senders.raw_rate = 3.0;
    o.senders.image_size = 4 * 1024;
    o.senders.round = Duration::from_secs(10);
    o.pipelined_block = 1 << 20;
    println!(
        "soak: {seconds} s, seed {}, in {}",
        o.seed,
        dir.path().display()
    );
    let r = run(o).await?;
    print!("{}", r.table());
    let violations = r.violations();
    if !violations.is_empty() {
        // Keep what the run left for a look.
        let kept = dir.keep();
        println!(
            "kept {}; node log tail:\n{}",
            kept.display(),
            it::soak::node::tail(&kept.join("node.log"), 30)
        );
    }
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(r.verified.lost.is_empty() && r.verified.duplicated.is_empty());
    assert!(r.node.own_exits.is_empty(), "{:?}", r.node.own_exits);
    assert!(
        r.refusals_seen > 0,
        "the floods went past the listeners' shares"
    );
    Ok(())
}
