//! `db`: a Doee doing one indexed insert and one select per invocation,
//! beside the same two statements issued directly with sqlx on a SQLite
//! file set up as DBriver sets up a project's (WAL, `synchronous=NORMAL`,
//! the same number of connections), in the same run.

use crate::{Shape, load, platform, round, runtime, trigger_addr};
use bytes::Bytes;
use isms_test_support::{copy_dir, fixtures, temp_dir};
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SCHEMA: [&str; 2] = [
    "CREATE TABLE readings (id INTEGER PRIMARY KEY AUTOINCREMENT, device TEXT NOT NULL, value REAL)",
    "CREATE INDEX readings_device ON readings (device)",
];
/// DBriver's default connections per project.
const CONNECTIONS: u32 = 4;

pub fn db(isms: &Path, shape: Shape) -> anyhow::Result<serde_json::Value> {
    let p = platform(isms, &[]);
    p.run(&["project", "create", "bench"]);
    let token = p.admin_token();
    for statement in SCHEMA {
        let body = json!({ "query": statement }).to_string();
        let response = p.call_api(
            "POST",
            "/api/v1/projects/bench/sql",
            Some(&token),
            body.as_bytes(),
        );
        anyhow::ensure!(response.status == 200, "{statement}: {}", response.text());
    }
    let dir = temp_dir("bench-data");
    copy_dir(&fixtures().join("data"), &dir);
    let manifest = std::fs::read_to_string(dir.join("doee.toml"))?.replace(
        "concurrency = 4",
        &format!("concurrency = {0}\nmin_warm = {0}", shape.workers),
    );
    std::fs::write(dir.join("doee.toml"), manifest)?;
    p.deploy(&dir, "bench");
    let _ = std::fs::remove_dir_all(&dir);

    let rt = runtime();
    eprintln!(
        "the Doee, {} connections, {} s…",
        shape.concurrency, shape.duration
    );
    let mut through_doee = rt.block_on(load::drive(
        trigger_addr(&p),
        "/bench/data",
        Bytes::from("bench dev-1"),
        shape.concurrency,
        Duration::from_secs(2),
        Duration::from_secs(shape.duration),
    ));
    drop(p);

    eprintln!(
        "sqlx directly, {} tasks, {} s…",
        shape.concurrency, shape.duration
    );
    let direct = rt.block_on(direct(shape))?;
    Ok(json!({
        "scenario": "db",
        "backend": "sqlite",
        "concurrency": shape.concurrency,
        "duration_s": shape.duration,
        "workers": shape.workers,
        "rps": round(through_doee.rps()),
        "p50_us": through_doee.percentile(50.0),
        "p99_us": through_doee.percentile(99.0),
        "errors": through_doee.errors,
        "direct_rps": round(direct),
        "ratio_to_direct": round(through_doee.rps() / direct),
    }))
}

/// Insert-and-select pairs per second, straight to a SQLite file.
async fn direct(shape: Shape) -> anyhow::Result<f64> {
    let dir = temp_dir("bench-direct");
    let options = SqliteConnectOptions::new()
        .filename(dir.join("direct.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(CONNECTIONS)
        .connect_with(options)
        .await?;
    for statement in SCHEMA {
        sqlx::query(statement).execute(&pool).await?;
    }
    let start = Instant::now() + Duration::from_secs(2);
    let end = start + Duration::from_secs(shape.duration);
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..shape.concurrency)
        .map(|_| {
            let (pool, done) = (pool.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < end {
                    let inserted =
                        sqlx::query("INSERT INTO readings (device, value) VALUES ($1, 1.5)")
                            .bind("dev-1")
                            .execute(&pool)
                            .await;
                    let selected =
                        sqlx::query("SELECT id, value FROM readings WHERE device = $1 LIMIT 1")
                            .bind("dev-1")
                            .fetch_all(&pool)
                            .await;
                    let now = Instant::now();
                    if inserted.is_ok() && selected.is_ok() && now >= start && now <= end {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    pool.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(done.load(Ordering::Relaxed) as f64 / shape.duration as f64)
}
