//! Disk cost per record (issue 16, item 5): fill a store with N signed records in
//! batches, then print what each table holds and costs, the file size, and the
//! file size after `Store::compact`, and how long opening the file takes (it
//! builds the kept coded symbols from the trie).
//!
//! Batches of 50,000 are how a bulk load writes; batches of 100 without fsync are
//! how gossip and anti-entropy write under load (each such commit leaves pages
//! behind that only compaction returns).
//!
//! `cargo build --release -p cirrus-node --example disk_usage && target/release/examples/disk_usage`
//! (defaults: `--n 1000000 --batches 50000,100`; `--dir` picks the disk.)

mod records;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::ensure;
use cirrus_node::store::Store;
use cirrus_proto::api::PutStatus;
use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    n: usize,
    /// Records per commit, comma-separated: one fresh store each.
    #[arg(long, value_delimiter = ',', default_value = "50000,100")]
    batches: Vec<usize>,
    /// Parent of the temp directory (default: $TMPDIR or /tmp).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let parent = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::var_os("TMPDIR").map_or("/tmp".into(), PathBuf::from));
    let root = tempfile::Builder::new()
        .prefix("cirrus-disk.")
        .tempdir_in(&parent)?;
    let t = Instant::now();
    let records = records::sign_records(args.n, 0x5d, "disk");
    let canonical: u64 = records.iter().map(|s| s.record.encode().len() as u64).sum();
    eprintln!(
        "signed {} records in {:.1} s; canonical bytes {} ({:.1} per record)",
        args.n,
        t.elapsed().as_secs_f64(),
        canonical,
        canonical as f64 / args.n as f64
    );
    for &batch in &args.batches {
        ensure!(batch > 0, "a batch holds at least one record");
        let path = root.path().join(format!("b{batch}.redb"));
        let store = Store::open(&path)?;
        let t = Instant::now();
        for chunk in records.chunks(batch) {
            let statuses = store.apply_with(chunk, batch >= 10_000)?;
            ensure!(statuses.iter().all(|s| *s == PutStatus::Applied));
        }
        store.apply(&[])?;
        let fill = t.elapsed().as_secs_f64();
        let before = std::fs::metadata(&path)?.len();
        let usage = store.usage()?;
        let t = Instant::now();
        store.compact()?;
        let compact = t.elapsed().as_secs_f64();
        let after = std::fs::metadata(&path)?.len();
        let per = |b: u64| b as f64 / args.n as f64;
        println!();
        println!(
            "batches of {batch}: filled in {fill:.1} s; file {:.0} MB = {:.0} B per record = {:.2}x canonical; after compaction ({compact:.1} s) {:.0} MB = {:.0} B per record = {:.2}x",
            before as f64 / 1e6,
            per(before),
            before as f64 / canonical as f64,
            after as f64 / 1e6,
            per(after),
            after as f64 / canonical as f64,
        );
        println!();
        println!(
            "| table | entries | stored B/record | metadata B/record | fragmented B/record | pages B/record |"
        );
        println!("|---|---:|---:|---:|---:|---:|");
        for u in &usage {
            println!(
                "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
                u.name,
                u.entries,
                per(u.stored_bytes),
                per(u.metadata_bytes),
                per(u.fragmented_bytes),
                per(u.page_bytes)
            );
        }
        let total: u64 = usage.iter().map(|u| u.page_bytes).sum();
        println!("| all tables | | | | | {:.1} |", per(total));
        drop(store);
        // Opening builds the kept coded symbols from a scan of the trie.
        let t = Instant::now();
        let reopened = Store::open(&path)?;
        println!();
        println!(
            "opening the store again: {:.2} s",
            t.elapsed().as_secs_f64()
        );
        drop(reopened);
        std::fs::remove_file(&path)?;
    }
    Ok(())
}
