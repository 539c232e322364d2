//! Author-side commands: make a key, sign records locally, send them, fetch and check.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use cirrus_node::client::Client;
use cirrus_node::identity::write_private;
use cirrus_proto::api::{GetResult, PutResult};
use cirrus_proto::record::{Kind, Record, Slot};
use ed25519_dalek::SigningKey;
use serde_json::json;

use super::{IdentityArg, NodeArg};

#[derive(clap::Args)]
pub struct PutArgs {
    key: String,
    /// The value (omit with --delete).
    value: Option<String>,
    /// Write a tombstone: the key's value becomes null.
    #[arg(long)]
    delete: bool,
    #[command(flatten)]
    sign: SignArgs,
}

/// What every signing command shares: sequence number, output, key and node.
#[derive(clap::Args)]
pub struct SignArgs {
    /// Sequence number (default: one above what the node holds, at least the current
    /// time in milliseconds, so a later write wins even through another node).
    #[arg(long)]
    seq: Option<u64>,
    /// Print the result as JSON (with the session token after this write).
    #[arg(long)]
    json: bool,
    /// Session token of earlier writes (from `--json`): the node applies this
    /// write only once it holds those (docs/sessions.md).
    #[arg(long, env = "CIRRUS_SESSION")]
    session: Option<String>,
    #[command(flatten)]
    identity: IdentityArg,
    #[command(flatten)]
    node: NodeArg,
}

#[derive(clap::Args)]
pub struct RateArgs {
    target: String,
    /// Score from 1 to 5 (omit with --delete).
    score: Option<u8>,
    /// Withdraw the rating (a tombstone).
    #[arg(long)]
    delete: bool,
    #[command(flatten)]
    sign: SignArgs,
}

#[derive(clap::Args)]
pub struct GetArgs {
    /// Author public key (hex).
    author: String,
    key: String,
    #[arg(long, default_value = "doc")]
    kind: Kind,
    /// Ask for a Merkle proof and check it against the root the node returns.
    #[arg(long)]
    proof: bool,
    /// A verified read: the root a strict majority of the nodes report, a proof from
    /// one of them checked here; nodes that disagree are named. With one `--node`,
    /// the others are found through its `getpeerinfo`.
    #[arg(long)]
    verify: bool,
    /// Answer only once the node holds this session's writes (a token from
    /// `put --json`).
    #[arg(long, env = "CIRRUS_SESSION")]
    session: Option<String>,
    /// Node URL (repeat for --verify).
    #[arg(
        long = "node",
        env = "CIRRUS_NODE",
        default_value = "http://127.0.0.1:38081",
        value_delimiter = ','
    )]
    nodes: Vec<String>,
    /// Seconds to wait for an answer.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

fn default_identity() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME").context("$HOME is not set; pass --identity")?;
    Ok(PathBuf::from(home).join(".cirrus").join("identity.key"))
}

pub fn keygen(out: Option<PathBuf>, force: bool) -> anyhow::Result<ExitCode> {
    let path = match out {
        Some(p) => p,
        None => default_identity()?,
    };
    if path.exists() && !force {
        bail!("{} exists; pass --force to replace it", path.display());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    write_private(&path, format!("{}\n", hex::encode(seed)).as_bytes())
        .with_context(|| format!("write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    println!("{}", hex::encode(key.verifying_key().to_bytes()));
    Ok(ExitCode::SUCCESS)
}

fn load_identity(arg: &IdentityArg) -> anyhow::Result<SigningKey> {
    let path = match &arg.identity {
        Some(p) => p.clone(),
        None => default_identity()?,
    };
    read_key(&path).with_context(|| {
        format!(
            "author key {} (make one with `cirrus keygen`)",
            path.display()
        )
    })
}

fn read_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path)?;
    let seed: [u8; 32] =
        cirrus_proto::hexser::decode_array(text.trim()).map_err(anyhow::Error::msg)?;
    Ok(SigningKey::from_bytes(&seed))
}

pub async fn put(a: PutArgs) -> anyhow::Result<ExitCode> {
    let value = match (a.value, a.delete) {
        (Some(v), false) => Some(v),
        (None, true) => None,
        (Some(_), true) => bail!("give either VALUE or --delete, not both"),
        (None, false) => bail!("VALUE is required (or --delete to write a tombstone)"),
    };
    sign_and_send(&a.sign, Kind::Doc, a.key, value).await
}

pub async fn rate(a: RateArgs) -> anyhow::Result<ExitCode> {
    let value = match (a.score, a.delete) {
        (Some(s @ 1..=5), false) => Some(s.to_string()),
        (Some(s), false) => bail!("SCORE must be 1 to 5, got {s}"),
        (None, true) => None,
        (Some(_), true) => bail!("give either SCORE or --delete, not both"),
        (None, false) => bail!("SCORE is required (or --delete to withdraw the rating)"),
    };
    sign_and_send(&a.sign, Kind::Rating, a.target, value).await
}

async fn sign_and_send(
    a: &SignArgs,
    kind: Kind,
    key: String,
    value: Option<String>,
) -> anyhow::Result<ExitCode> {
    let secret = load_identity(&a.identity)?;
    let client = a.node.client()?;
    let seq = match a.seq {
        Some(s) => s,
        None => next_seq(&client, &secret, kind, &key).await?,
    };
    let record = Record::sign(&secret, kind, key, seq, value);
    record.check_limits()?;
    let mut params = json!({ "record": record });
    if let Some(s) = &a.session {
        params["session"] = s.as_str().into();
    }
    let res: PutResult = client.call_as("put", params).await?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "id": hex::encode(res.id),
                "status": res.status,
                "session": res.session,
                "record": record,
            }))?
        );
    } else {
        let status = serde_json::to_value(res.status)?;
        println!("{:<10} {}", "status", status.as_str().unwrap_or_default());
        println!("{:<10} {}", "id", hex::encode(res.id));
        println!("{:<10} {}", "author", hex::encode(record.author));
        println!("{:<10} {}", "seq", record.seq);
    }
    Ok(ExitCode::SUCCESS)
}

async fn next_seq(
    client: &Client,
    secret: &SigningKey,
    kind: Kind,
    key: &str,
) -> anyhow::Result<u64> {
    let author = hex::encode(secret.verifying_key().to_bytes());
    let held: GetResult = client
        .call_as("get", json!({"author": author, "key": key, "kind": kind}))
        .await?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Ok(held
        .record
        .map_or(0, |r| r.record.seq.saturating_add(1))
        .max(now_ms))
}

pub async fn get(a: GetArgs) -> anyhow::Result<ExitCode> {
    let author: [u8; 32] = cirrus_proto::hexser::decode_array(&a.author)
        .map_err(|e| anyhow::anyhow!("AUTHOR: {e}"))?;
    if a.verify {
        return verified_get(a, author).await;
    }
    let first = a.nodes.first().context("--node is required")?;
    let client = super::client(first, a.timeout)?;
    let mut params = json!({"author": a.author, "key": a.key, "kind": a.kind, "proof": a.proof});
    if let Some(s) = &a.session {
        params["session"] = s.as_str().into();
    }
    let res: GetResult = client.call_as("get", params).await?;
    println!("{}", serde_json::to_string_pretty(&res.record)?);
    if let Some(view) = &res.record {
        view.record
            .verify()
            .context("the node returned a record whose signature does not verify")?;
        if view.record.id() != view.id {
            bail!("the node returned a record whose id does not match its content");
        }
    }
    if !a.proof {
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(proof), Some(root)) = (&res.proof, &res.root) else {
        bail!("the node did not return a proof");
    };
    let slot = Slot {
        author,
        kind: a.kind,
        key: a.key,
    };
    let proven = proof
        .verify(root, &slot.hash())
        .context("the proof does not verify")?;
    match (proven, &res.record) {
        (Some(id), Some(view)) if id == view.id => {
            eprintln!("proof: present, checked against root {}", hex::encode(root));
        }
        (None, None) => eprintln!("proof: absent, checked against root {}", hex::encode(root)),
        _ => bail!("the proof and the returned record disagree"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `get --verify`: through the cloud of the given nodes (and, with one, its peers).
async fn verified_get(a: GetArgs, author: [u8; 32]) -> anyhow::Result<ExitCode> {
    use cirrus_node::cloud::{Cloud, CloudConfig};
    let timeout =
        Duration::try_from_secs_f64(a.timeout).context("--timeout must be a positive number")?;
    let cfg = CloudConfig {
        timeout,
        discover: a.nodes.len() == 1,
        ..CloudConfig::default()
    };
    let cloud = Cloud::connect(&a.nodes, cfg).await?;
    cloud.set_session(a.session.clone());
    let slot = Slot {
        author,
        kind: a.kind,
        key: a.key,
    };
    let read = cloud.verified_get(&slot).await?;
    println!("{}", serde_json::to_string_pretty(&read.record)?);
    let m = &read.majority;
    eprintln!(
        "verified: {} of {} nodes report root {}; proof from {} checked against it",
        m.agreed.len(),
        m.asked,
        hex::encode(m.root),
        read.served_by
    );
    for (node, root) in &m.disagreed {
        eprintln!("disagreeing: {node} reports root {}", hex::encode(root));
    }
    for (node, why) in &m.unresponsive {
        eprintln!("no answer: {node}: {why}");
    }
    for (node, why) in &read.caught {
        eprintln!("caught: {node}: {why}");
    }
    Ok(ExitCode::SUCCESS)
}
