//! The ceiling for the transport benchmark (scripts/bench-transports.sh): a bare axum
//! `POST /` handler that reads the body and answers a constant, the size of a
//! `getdbhash` answer. Same axum, hyper and tokio as the node's HTTP API, on the same
//! kind of runtime (`Runtime::new`, one worker per core), and no JSON-RPC,
//! dispatcher or database.
//!
//! Prints `{"event":"ready","http":"IP:PORT"}` on stdout, then serves until killed.
//!
//! `target/release/examples/bare_axum [--bind 127.0.0.1:0]`

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::routing::post;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: String,
}

/// A `getdbhash` answer of a node holding 1000 records.
const ANSWER: &str = concat!(
    r#"{"jsonrpc":"2.0","result":{"ratings":{"count":0,"sum":0},"records":1000,"#,
    r#""root":"73205e01b60d7e8f0e7dcb23ffb0859fd362efa4df755dda84eefec0a7dd9f9f"},"id":1}"#
);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Runtime::new()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.bind).await?;
        println!(r#"{{"event":"ready","http":"{}"}}"#, listener.local_addr()?);
        let app = Router::new().route(
            "/",
            post(|_body: Bytes| async { ([(header::CONTENT_TYPE, "application/json")], ANSWER) }),
        );
        axum::serve(listener, app).await?;
        Ok(())
    })
}
