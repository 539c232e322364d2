//! `cirrus call METHOD [PARAMS_JSON]`: print the result, or the error and exit 1.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use cirrus_node::client::ClientError;
use serde_json::Value;

use super::NodeArg;

#[derive(clap::Args)]
pub struct CallArgs {
    /// Method name, e.g. getnodeinfo.
    method: String,
    /// Params as a JSON object, e.g. '{"target":"film"}'.
    params: Option<String>,
    /// Stay connected (ws:// only) and print each notification as one JSON line;
    /// the topics come from PARAMS_JSON's `topics` (default: records and peers).
    #[arg(long)]
    subscribe: bool,
    /// Reach this peer (behind NAT) through --rendezvous: punch, else relay.
    #[arg(long, requires = "rendezvous")]
    peer: Option<String>,
    /// The node that introduces us to --peer (any URL `--node` accepts).
    #[arg(long)]
    rendezvous: Option<String>,
    /// How to reach --peer directly.
    #[arg(long, default_value = "udp", value_parser = ["udp", "tcp"])]
    transport: String,
    /// The node's data dir: admin methods (addpeer, shutdown) get the token from
    /// its admin.token.
    #[arg(long, env = "CIRRUS_DATA_DIR")]
    data_dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    node: NodeArg,
}

/// Methods that need the node's admin token.
const ADMIN: &[&str] = &["addpeer", "shutdown"];

pub async fn call(a: CallArgs) -> anyhow::Result<ExitCode> {
    let mut params: Value = match &a.params {
        Some(p) => serde_json::from_str(p).context("PARAMS_JSON is not valid JSON")?,
        None => Value::Object(Default::default()),
    };
    if let Some(dir) = &a.data_dir
        && ADMIN.contains(&a.method.as_str())
    {
        let path = dir.join("admin.token");
        let token = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the admin token {}", path.display()))?;
        let Value::Object(p) = &mut params else {
            anyhow::bail!("PARAMS_JSON must be an object");
        };
        p.insert("token".into(), token.trim().into());
    }
    if let (Some(peer), Some(rendezvous)) = (&a.peer, &a.rendezvous) {
        use cirrus_node::rendezvous::{Path, call_peer};
        let transport: cirrus_proto::api::Transport =
            a.transport.parse().map_err(anyhow::Error::msg)?;
        let request = cirrus_proto::jsonrpc::request(1, &a.method, params);
        let timeout = Duration::try_from_secs_f64(a.node.timeout)
            .context("--timeout must be a positive number")?;
        let reached = call_peer(rendezvous, peer, transport, request, timeout).await?;
        match &reached.path {
            Path::Direct(at) => eprintln!("path: direct ({} to {at})", a.transport),
            Path::Relay { why } => eprintln!("path: relay (through {rendezvous}; direct: {why})"),
        }
        return print_response(&reached.response);
    }
    if a.subscribe {
        let topics: Vec<String> = match params.get("topics") {
            Some(t) => {
                serde_json::from_value(t.clone()).context("`topics` must be a list of strings")?
            }
            None => vec!["records".into(), "peers".into()],
        };
        let client = a.node.client()?;
        let subscribed = || eprintln!("subscribed to {}; Ctrl-C to stop", topics.join(", "));
        client
            .subscribe(&topics, subscribed, |note| {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{note}");
                let _ = out.flush();
            })
            .await?;
        return Ok(ExitCode::SUCCESS);
    }
    match a.node.client()?.call(&a.method, params).await {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(ClientError::Rpc(e)) => {
            eprintln!("error {}: {}", e.code, e.message);
            if let Some(d) = e.data {
                eprintln!("data: {d}");
            }
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

/// Print a whole JSON-RPC response the way `call` prints any answer.
fn print_response(r: &Value) -> anyhow::Result<ExitCode> {
    if let Some(e) = r.get("error") {
        eprintln!(
            "error {}: {}",
            e["code"],
            e["message"].as_str().unwrap_or_default()
        );
        return Ok(ExitCode::FAILURE);
    }
    println!("{}", serde_json::to_string_pretty(&r["result"])?);
    Ok(ExitCode::SUCCESS)
}
