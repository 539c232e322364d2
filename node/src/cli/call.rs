//! `cirrus call METHOD [PARAMS_JSON]`: print the result, or the error and exit 1.

use std::process::ExitCode;

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
    #[command(flatten)]
    node: NodeArg,
}

pub async fn call(a: CallArgs) -> anyhow::Result<ExitCode> {
    let params: Value = match &a.params {
        Some(p) => serde_json::from_str(p).context("PARAMS_JSON is not valid JSON")?,
        None => Value::Object(Default::default()),
    };
    if a.subscribe {
        let topics: Vec<String> = match params.get("topics") {
            Some(t) => {
                serde_json::from_value(t.clone()).context("`topics` must be a list of strings")?
            }
            None => vec!["records".into(), "peers".into()],
        };
        let client = a.node.client()?;
        eprintln!("subscribed to {}; Ctrl-C to stop", topics.join(", "));
        client
            .subscribe(&topics, |note| {
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
