//! `isms sql <project> "<query>"`.

use super::{Api, ApiArgs};

/// `isms sql`.
#[derive(clap::Args, Debug)]
pub struct SqlArgs {
    /// The project.
    pub project: String,
    /// The SQL statement; its placeholders (`?` on SQLite, `$1` on PostgreSQL) take the --param values in order.
    pub query: String,
    /// A positional parameter (JSON: `42`, `"text"`, `null`; anything else is a string).
    #[arg(short, long = "param")]
    pub params: Vec<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Runs `isms sql` and prints the rows as a table.
pub async fn run(args: SqlArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let params: Vec<serde_json::Value> = args
        .params
        .iter()
        .map(|p| serde_json::from_str(p).unwrap_or_else(|_| serde_json::Value::String(p.clone())))
        .collect();
    let answer = api
        .post_json(
            &format!("/api/v1/projects/{}/sql", args.project),
            &serde_json::json!({ "query": args.query, "params": params }),
        )
        .await?
        .json()
        .map_err(anyhow::Error::msg)?;
    let columns: Vec<String> = answer["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect();
    let rows = answer["rows"].as_array().cloned().unwrap_or_default();
    if columns.is_empty() {
        let affected = answer["rows_affected"].as_u64().unwrap_or(0);
        println!(
            "({affected} row{} affected)",
            if affected == 1 { "" } else { "s" }
        );
        return Ok(());
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|column| match &row[column] {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            cells
                .iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .chain([columns[i].chars().count()])
                .max()
                .unwrap_or(0)
                .min(60)
        })
        .collect();
    let line = |values: &[String]| {
        values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("{}", line(&columns));
    for row in &cells {
        println!("{}", line(row));
    }
    println!(
        "({} row{})",
        cells.len(),
        if cells.len() == 1 { "" } else { "s" }
    );
    Ok(())
}
