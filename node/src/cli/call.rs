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
    /// With --peer: send the request this many times over one link (relay until
    /// the punch opens a direct path, then direct); stderr says each path change.
    #[arg(long, default_value_t = 1, requires = "peer")]
    repeat: u32,
    /// With --repeat: milliseconds between requests.
    #[arg(long, default_value_t = 0, requires = "peer")]
    interval_ms: u64,
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
        let transport: cirrus_proto::api::Transport =
            a.transport.parse().map_err(anyhow::Error::msg)?;
        let timeout = Duration::try_from_secs_f64(a.node.timeout)
            .context("--timeout must be a positive number")?;
        let request = cirrus_proto::jsonrpc::request(1, &a.method, params);
        return call_peer(
            rendezvous,
            peer,
            transport,
            &request,
            timeout,
            a.repeat,
            a.interval_ms,
        )
        .await;
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

/// `call --peer`: one link, `repeat` requests over it; stderr says how each went
/// and every change of path, and last how the punch settled.
async fn call_peer(
    rendezvous: &str,
    peer: &str,
    transport: cirrus_proto::api::Transport,
    request: &Value,
    timeout: Duration,
    repeat: u32,
    interval_ms: u64,
) -> anyhow::Result<ExitCode> {
    use cirrus_node::rendezvous::{LinkEvent, PeerLink, Via};
    let link = PeerLink::open(rendezvous, peer, transport, timeout)?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let say = |e: LinkEvent| match e {
        LinkEvent::Direct { at, after } => {
            eprintln!(
                "path: direct ({transport} to {at}) after {:.0} ms",
                ms(after)
            )
        }
        LinkEvent::Failed { why, after } => eprintln!(
            "path: relay (through {rendezvous}; direct: {why}) after {:.0} ms",
            ms(after)
        ),
        LinkEvent::Lost { why } => eprintln!("path: lost ({why}); relaying"),
        LinkEvent::Guessing { why, after } => eprintln!(
            "path: guessing ports (plain punch: {why}) after {:.0} ms",
            ms(after)
        ),
    };
    let mut code = ExitCode::SUCCESS;
    for i in 1..=repeat.max(1) {
        let t0 = std::time::Instant::now();
        let (response, via) = link.call(request).await?;
        let took = ms(t0.elapsed());
        match via {
            Via::Direct(at) => {
                eprintln!("answer {i}: direct ({transport} to {at}) after {took:.1} ms")
            }
            Via::Relay { why } => {
                eprintln!(
                    "answer {i}: relay (through {rendezvous}; direct: {why}) after {took:.1} ms"
                )
            }
        }
        code = print_response(&response)?;
        while let Some(e) = link.try_event() {
            say(e);
        }
        if i < repeat && interval_ms > 0 {
            tokio::time::sleep(Duration::from_millis(interval_ms)).await;
        }
    }
    // How the punch went, if it has not been said yet.
    let _ = link.settled().await;
    while let Some(e) = link.try_event() {
        say(e);
    }
    Ok(code)
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
