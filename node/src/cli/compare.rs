//! `cirrus compare`: one row per node, and whether they all hold the same database.

use std::process::ExitCode;

use cirrus_proto::api::NodeInfo;
use serde_json::json;

#[derive(clap::Args)]
pub struct CompareArgs {
    /// Node URL; repeat for each node.
    #[arg(long = "node", required = true)]
    nodes: Vec<String>,
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// Print the rows as JSON.
    #[arg(long)]
    json: bool,
}

struct Row {
    url: String,
    info: Result<NodeInfo, String>,
}

pub async fn compare(a: CompareArgs) -> anyhow::Result<ExitCode> {
    let mut handles = Vec::new();
    for url in &a.nodes {
        let (url, timeout) = (url.clone(), a.timeout);
        handles.push(tokio::spawn(async move {
            let info = match super::client(&url, timeout) {
                Ok(c) => c
                    .call_as::<NodeInfo>("getnodeinfo", json!({}))
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            Row { url, info }
        }));
    }
    let mut rows = Vec::new();
    for h in handles {
        rows.push(h.await?);
    }
    let first = rows
        .first()
        .and_then(|r| r.info.as_ref().ok())
        .map(|i| i.db.clone());
    let agree = rows
        .iter()
        .all(|r| matches!(&r.info, Ok(i) if Some(&i.db) == first.as_ref()));

    if a.json {
        let out: Vec<_> = rows
            .iter()
            .map(|r| match &r.info {
                Ok(i) => json!({"node": r.url, "peerId": i.peer_id, "records": i.db.records, "ratingsSum": i.db.ratings.sum, "root": hex::encode(i.db.root)}),
                Err(e) => json!({"node": r.url, "error": e}),
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"agree": agree, "nodes": out}))?
        );
    } else {
        print_table(&rows, agree);
    }
    Ok(if agree {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_table(rows: &[Row], agree: bool) {
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| match &r.info {
            Ok(i) => [
                r.url.clone(),
                i.peer_id.clone(),
                i.db.records.to_string(),
                i.db.ratings.sum.to_string(),
                hex::encode(i.db.root),
            ],
            Err(e) => [
                r.url.clone(),
                format!("unreachable: {e}"),
                "-".into(),
                "-".into(),
                "-".into(),
            ],
        })
        .collect();
    let header = ["NODE", "PEER ID", "RECORDS", "RATINGS SUM", "ROOT"];
    let mut width = header.map(str::len);
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |row: [&str; 5]| {
        format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3]
        )
    };
    println!("{}", line(header));
    for row in &cells {
        println!("{}", line([&row[0], &row[1], &row[2], &row[3], &row[4]]));
    }
    if agree {
        println!("all {} nodes agree", rows.len());
    } else {
        println!("nodes DISAGREE (or some could not be reached)");
    }
}
