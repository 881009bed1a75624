//! Writes the seed corpus of every target to `fuzz/corpus/<target>/` (replacing what is there):
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for target in hdfs_ingest_fuzz::seeds::TARGETS {
        let dir = corpus.join(target);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let seeds = hdfs_ingest_fuzz::seeds::for_target(target);
        let bytes: usize = seeds.iter().map(|(_, b)| b.len()).sum();
        for (name, data) in &seeds {
            std::fs::write(dir.join(name), data)?;
        }
        println!("{target}: {} seeds, {bytes} bytes", seeds.len());
    }
    Ok(())
}
