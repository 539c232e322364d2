//! `cirrus`: the node daemon and its command-line client.

mod cli;

use clap::Parser;

/// The log filter when `RUST_LOG` is unset. gossipsub warns once per message it
/// drops for a slow peer (294,376 lines in one 2.5-minute run of a saturated 50-node
/// testnet), which would fill an operator's disk; those drops are counted by
/// `libp2p_gossipsub_failed_messages` on `/metrics` instead.
const DEFAULT_LOG: &str = "info,libp2p_gossipsub=error";

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    if !args.is_node() {
        // Rust ignores SIGPIPE, so `cirrus call ... | head` panicked on the closed
        // pipe. A client command ends quietly when its reader has gone, like any
        // Unix filter; a node keeps ignoring it (a closed stdout must not stop it).
        // SAFETY: no other thread exists yet.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(cli::run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
