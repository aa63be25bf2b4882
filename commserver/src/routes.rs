//! The table of active triggers and topic namespaces, loaded from Resadmin.

use isms_ipc::connection::Scope;
use isms_ipc::resadmin::{
    HttpRoute, MqttRoute, RouteTable, Routes as RoutesRequest, ScheduleRoute,
};
use isms_ipc::topic::{self, Namespace};
use isms_ipc::{Connection, DoeeName, ProjectName};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

/// What the CommServer serves, as last loaded.
#[derive(Default)]
struct Table {
    /// HTTP routes by project, then by route.
    http: HashMap<ProjectName, HashMap<String, Arc<HttpRoute>>>,
    /// MQTT triggers whose filters lie in their project's namespaces.
    mqtt: Vec<Arc<MqttRoute>>,
    /// Each project's topic namespaces.
    topics: HashMap<ProjectName, Vec<Namespace>>,
    /// Schedules.
    schedules: Vec<Arc<ScheduleRoute>>,
}

impl Table {
    fn new(loaded: RouteTable) -> Table {
        let mut table = Table::default();
        for route in loaded.http {
            table
                .http
                .entry(route.target.project.clone())
                .or_default()
                .insert(route.route.clone(), Arc::new(route));
        }
        for project in loaded.topics {
            let namespaces = project
                .namespaces
                .iter()
                .filter_map(|ns| Namespace::parse(ns).ok())
                .collect();
            table.topics.insert(project.project, namespaces);
        }
        table.schedules = loaded.schedules.into_iter().map(Arc::new).collect();
        for route in loaded.mqtt {
            // Checked at deploy too; checked again here because grants change.
            let inside = table
                .topics
                .get(&route.target.project)
                .is_some_and(|ns| topic::allowed(ns, &route.filter));
            if inside {
                table.mqtt.push(Arc::new(route));
            } else {
                tracing::warn!(project = %route.target.project, filter = %route.filter, "MQTT trigger outside its project's topic namespaces ignored");
            }
        }
        table
    }
}

/// The route table; `None` until the first load.
pub struct Routes {
    table: RwLock<Option<Arc<Table>>>,
    loaded_at: Mutex<Option<Instant>>,
    reload: Notify,
    /// Reloads asked for so far, and how many of them the table in use
    /// has seen: a miss while `served < wanted` waits for the load that
    /// is on its way rather than answering 404 from a table it replaces.
    wanted: AtomicU64,
    served: AtomicU64,
    generation: watch::Sender<u64>,
}

impl Default for Routes {
    fn default() -> Self {
        Routes {
            table: RwLock::new(None),
            loaded_at: Mutex::new(None),
            reload: Notify::new(),
            wanted: AtomicU64::new(0),
            served: AtomicU64::new(0),
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
    fn snapshot(&self) -> Option<Arc<Table>> {
        self.table.read().ok()?.clone()
    }

    /// Finds an HTTP route.
    pub fn find(&self, project: &str, route: &str) -> Lookup {
        let Some(table) = self.snapshot() else {
            return Lookup::NotReady;
        };
        match table.http.get(project).and_then(|routes| routes.get(route)) {
            Some(found) => Lookup::Found(found.clone()),
            None => Lookup::Missing,
        }
    }

    /// Returns once the table has been loaded.
    pub async fn loaded(&self) {
        let _ = self.generation.subscribe().wait_for(|g| *g > 0).await;
    }

    /// A project's topic namespaces; `None` until loaded (an unknown
    /// project has none).
    pub fn namespaces(&self, project: &ProjectName) -> Option<Vec<Namespace>> {
        let table = self.snapshot()?;
        Some(table.topics.get(project).cloned().unwrap_or_default())
    }

    /// The MQTT triggers whose filter matches `topic`.
    pub fn mqtt_matching(&self, topic: &str) -> Vec<Arc<MqttRoute>> {
        self.snapshot().map_or_else(Vec::new, |table| {
            table
                .mqtt
                .iter()
                .filter(|route| topic::matches(&route.filter, topic))
                .cloned()
                .collect()
        })
    }

    /// An MQTT trigger of a Doee's active version, for its version,
    /// priority and timeout.
    pub fn mqtt_route(&self, project: &ProjectName, doee: &DoeeName) -> Option<Arc<MqttRoute>> {
        let table = self.snapshot()?;
        table
            .mqtt
            .iter()
            .find(|route| &route.target.project == project && &route.target.doee == doee)
            .cloned()
    }

    /// Every distinct filter of the MQTT triggers.
    pub fn mqtt_filters(&self) -> BTreeSet<String> {
        self.snapshot().map_or_else(BTreeSet::new, |table| {
            table
                .mqtt
                .iter()
                .map(|route| route.filter.clone())
                .collect()
        })
    }

    /// Every schedule; none until loaded.
    pub fn schedules(&self) -> Vec<Arc<ScheduleRoute>> {
        self.snapshot()
            .map_or_else(Vec::new, |table| table.schedules.clone())
    }

    /// Changes whenever a new table is loaded.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Asks for the table to be loaded again; returns the reload's number.
    pub fn request_reload(&self) -> u64 {
        let wanted = self.wanted.fetch_add(1, Ordering::SeqCst) + 1;
        self.reload.notify_one();
        wanted
    }

    /// After a miss: waits (up to `wait`) for a reload already asked for
    /// (a deploy's event came just before its first request), or, if the
    /// table is older than `max_age`, asks for one and waits for it (the
    /// event may still be on its way). Rate-limited by `max_age`, so a
    /// stream of misses cannot hammer Resadmin. Whether a newer table came.
    pub async fn refresh_after_miss(&self, max_age: Duration, wait: Duration) -> bool {
        let mut generation = self.generation.subscribe();
        let stale = self
            .loaded_at
            .lock()
            .map(|at| at.is_none_or(|at| at.elapsed() > max_age))
            .unwrap_or(false);
        let wanted = if stale {
            self.request_reload()
        } else {
            self.wanted.load(Ordering::SeqCst)
        };
        let loaded = async {
            while self.served.load(Ordering::SeqCst) < wanted {
                if generation.changed().await.is_err() {
                    return;
                }
            }
        };
        let pending = self.served.load(Ordering::SeqCst) < wanted;
        pending && tokio::time::timeout(wait, loaded).await.is_ok()
    }

    /// Loads the table now and whenever a reload is requested; retries
    /// while Resadmin cannot answer. Never returns.
    pub async fn keep_loaded(self: Arc<Self>, conn: Connection) {
        let mut retry = Duration::from_millis(100);
        loop {
            // Reloads asked for before this call are answered by it.
            let loading_for = self.wanted.load(Ordering::SeqCst);
            match conn
                .call(&Scope::platform(Duration::from_secs(5)), RoutesRequest {})
                .await
            {
                Ok(loaded) => {
                    let table = Table::new(loaded);
                    let (http, mqtt, schedules) = (
                        table.http.values().map(HashMap::len).sum::<usize>(),
                        table.mqtt.len(),
                        table.schedules.len(),
                    );
                    if let Ok(mut current) = self.table.write() {
                        *current = Some(Arc::new(table));
                    }
                    if let Ok(mut at) = self.loaded_at.lock() {
                        *at = Some(Instant::now());
                    }
                    self.served.fetch_max(loading_for, Ordering::SeqCst);
                    self.generation.send_modify(|g| *g += 1);
                    tracing::info!(http, mqtt, schedules, "routes loaded");
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
