//! The table of active HTTP routes, loaded from Resadmin.

use isms_ipc::connection::Scope;
use isms_ipc::resadmin::{HttpRoute, Routes as RoutesRequest};
use isms_ipc::{Connection, ProjectName};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

/// Routes by project, then by route.
type Table = HashMap<ProjectName, HashMap<String, Arc<HttpRoute>>>;

/// The route table; `None` until the first load.
pub struct Routes {
    table: RwLock<Option<Table>>,
    loaded_at: Mutex<Option<Instant>>,
    reload: Notify,
    generation: watch::Sender<u64>,
}

impl Default for Routes {
    fn default() -> Self {
        Routes {
            table: RwLock::new(None),
            loaded_at: Mutex::new(None),
            reload: Notify::new(),
            generation: watch::channel(0).0,
        }
    }
}

/// What a lookup found.
pub enum Lookup {
    /// Routes are not loaded yet.
    NotReady,
    /// No such route.
    Missing,
    /// The route.
    Found(Arc<HttpRoute>),
}

impl Routes {
    /// Finds a route.
    pub fn find(&self, project: &str, route: &str) -> Lookup {
        let Ok(table) = self.table.read() else {
            return Lookup::NotReady;
        };
        let Some(table) = table.as_ref() else {
            return Lookup::NotReady;
        };
        match table.get(project).and_then(|routes| routes.get(route)) {
            Some(found) => Lookup::Found(found.clone()),
            None => Lookup::Missing,
        }
    }

    /// Asks for the table to be loaded again.
    pub fn request_reload(&self) {
        self.reload.notify_one();
    }

    /// After a miss: if the table is older than `max_age`, reloads it and
    /// waits (up to `wait`) for the new one. A deploy's event may still be
    /// on its way when its first request arrives. Rate-limited by `max_age`,
    /// so a stream of misses cannot hammer Resadmin.
    pub async fn refresh_if_older_than(&self, max_age: Duration, wait: Duration) -> bool {
        let stale = self
            .loaded_at
            .lock()
            .map(|at| at.is_none_or(|at| at.elapsed() > max_age))
            .unwrap_or(false);
        if !stale {
            return false;
        }
        let mut generation = self.generation.subscribe();
        generation.mark_unchanged();
        self.request_reload();
        tokio::time::timeout(wait, generation.changed())
            .await
            .is_ok()
    }

    /// Loads the table now and whenever a reload is requested; retries
    /// while Resadmin cannot answer. Never returns.
    pub async fn keep_loaded(self: Arc<Self>, conn: Connection) {
        let mut retry = Duration::from_millis(100);
        loop {
            match conn
                .call(&Scope::platform(Duration::from_secs(5)), RoutesRequest {})
                .await
            {
                Ok(routes) => {
                    let mut table = Table::new();
                    let count = routes.len();
                    for route in routes {
                        table
                            .entry(route.project.clone())
                            .or_default()
                            .insert(route.route.clone(), Arc::new(route));
                    }
                    if let Ok(mut current) = self.table.write() {
                        *current = Some(table);
                    }
                    if let Ok(mut at) = self.loaded_at.lock() {
                        *at = Some(Instant::now());
                    }
                    self.generation.send_modify(|g| *g += 1);
                    tracing::info!(routes = count, "routes loaded");
                    retry = Duration::from_millis(100);
                    self.reload.notified().await;
                }
                Err(failure) => {
                    tracing::warn!(%failure, "cannot load routes yet; retrying");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}
