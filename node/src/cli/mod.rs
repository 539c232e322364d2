//! Command-line parsing and the subcommands. Everything here may fail with
//! `anyhow`; the library modules below it use typed errors.

mod call;
mod compact;
mod compare;
mod records;
mod stun;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use cirrus_node::client::Client;
use cirrus_node::config::{Config, RunArgs};
use cirrus_node::node::Node;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cirrus",
    version,
    about = "Cirrus peer-to-peer node and client"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// Whether this runs a node (a long-lived server) rather than a client command.
    pub fn is_node(&self) -> bool {
        matches!(self.command, Command::Run(_))
    }
}

/// Where a client command sends its calls.
#[derive(clap::Args, Clone)]
pub struct NodeArg {
    /// Node URL, e.g. http://127.0.0.1:38081
    #[arg(long, env = "CIRRUS_NODE", default_value = "http://127.0.0.1:38081")]
    node: String,
    /// Seconds to wait for an answer.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

impl NodeArg {
    fn client(&self) -> anyhow::Result<Client> {
        client(&self.node, self.timeout)
    }
}

fn client(url: &str, timeout: f64) -> anyhow::Result<Client> {
    let timeout =
        Duration::try_from_secs_f64(timeout).context("--timeout must be a positive number")?;
    Ok(Client::connect(url, timeout)?)
}

/// The author key used to sign.
#[derive(clap::Args, Clone)]
pub struct IdentityArg {
    /// Author key file made by `cirrus keygen` (default ~/.cirrus/identity.key).
    #[arg(long, env = "CIRRUS_IDENTITY")]
    identity: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Start a node.
    Run(Box<RunArgs>),
    /// Create an author key for signing records.
    Keygen {
        /// Where to write the key (default ~/.cirrus/identity.key).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace an existing key file.
        #[arg(long)]
        force: bool,
    },
    /// Sign and store a document: KEY = VALUE (or delete it with --delete).
    Put(records::PutArgs),
    /// Sign and store a rating of TARGET, SCORE 1 to 5 (or withdraw it with --delete).
    Rate(records::RateArgs),
    /// Fetch a record, optionally with a Merkle proof that is checked here.
    Get(records::GetArgs),
    /// Call any API method and print its result.
    Call(call::CallArgs),
    /// Ask several nodes for their database hash; exit 0 only if all agree.
    Compare(compare::CompareArgs),
    /// Send one STUN Binding request to any RFC 8489 server; print the mapped address.
    Stun(stun::StunArgs),
    /// Rewrite a stopped node's database to its live size.
    Compact(compact::CompactArgs),
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => {
            let cfg = Config::build(&args)?;
            // Handlers go in before anything can report "ready", so a SIGTERM that
            // follows the ready line always means a clean shutdown.
            let stop = stop_signals()?;
            let node = Node::start(&cfg).await?;
            // One line on stdout for scripts and tests: where the node listens.
            println!(
                "{}",
                serde_json::json!({
                    "event": "ready",
                    "peerId": node.peer_id.to_string(),
                    "http": node.http,
                    "ws": node.ws,
                    "udp": node.udp,
                    "listen": node.listen.iter().map(ToString::to_string).collect::<Vec<_>>(),
                })
            );
            let token = node.shutdown_token();
            tokio::spawn(async move {
                stop.await;
                tracing::info!("shutting down");
                token.cancel();
            });
            node.run().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen { out, force } => records::keygen(out, force),
        Command::Put(a) => records::put(a).await,
        Command::Rate(a) => records::rate(a).await,
        Command::Get(a) => records::get(a).await,
        Command::Call(a) => call::call(a).await,
        Command::Compare(a) => compare::compare(a).await,
        Command::Stun(a) => stun::stun(a).await,
        Command::Compact(a) => compact::compact(a),
    }
}

/// Resolves on SIGINT or SIGTERM; the handlers are installed when this returns.
fn stop_signals() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
