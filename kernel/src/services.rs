//! The Services Controller: every service instance the kernel knows, its
//! capacity, load and health, and the choice of instance for each dispatch.

use crate::Now;
use bytes::Bytes;
use isms_ipc::kernel::{InstanceState, ServiceStatus};
use isms_ipc::names::labels_match;
use isms_ipc::{Load, Registration, ServiceKind};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One service instance, under its stable name.
#[derive(Debug)]
pub struct Instance {
    /// The ZeroMQ identity of its current incarnation.
    pub peer: Bytes,
    /// What it said when it registered.
    pub registration: Registration,
    /// Up or down.
    pub state: InstanceState,
    /// Requests dispatched to it and not answered.
    pub in_flight: u32,
    /// Requests it answered.
    pub handled: u64,
    /// Registrations after the first.
    pub restarts: u32,
    /// When the current incarnation registered (ms since the epoch).
    pub up_since_ms: u64,
    /// Its last sign of life.
    pub last_heartbeat: Instant,
    /// What its last heartbeat reported.
    pub load: Load,
    /// The address of its link, if it joined from another host.
    pub remote: Option<String>,
}

/// What a registration did.
#[derive(Debug, PartialEq, Eq)]
pub enum Registered {
    /// A name seen for the first time.
    New,
    /// The same connection registered again (after `Reregister`).
    Again,
    /// A new incarnation of a known name; the previous one's work is lost.
    Restarted {
        /// The previous incarnation's identity, if it was still up.
        previous: Option<Bytes>,
    },
}

/// An instance's load relative to its capacity (scaled to stay in
/// integers), then the requests it answered: among instances equally
/// loaded, the one that did least so far goes first, so that even calls
/// one at a time are spread over every instance (and reach a host that
/// just joined).
fn relative_load(i: &Instance) -> (u64, u64) {
    (
        u64::from(i.in_flight) * 1_000_000 / u64::from(i.registration.capacity.max(1)),
        i.handled,
    )
}

/// The kernel's view of every service instance.
pub struct ServicesController {
    by_name: HashMap<String, Instance>,
    names: HashMap<Bytes, String>,
    heartbeat_timeout: Duration,
}

impl ServicesController {
    /// No instances yet.
    pub fn new(heartbeat_timeout: Duration) -> Self {
        ServicesController {
            by_name: HashMap::new(),
            names: HashMap::new(),
            heartbeat_timeout,
        }
    }

    /// Records a registration from `peer`.
    pub fn register(
        &mut self,
        peer: Bytes,
        registration: Registration,
        remote: Option<String>,
        now: Now,
    ) -> Registered {
        let fresh = |restarts| Instance {
            peer: peer.clone(),
            registration: registration.clone(),
            state: InstanceState::Up,
            in_flight: 0,
            handled: 0,
            restarts,
            up_since_ms: now.epoch_ms,
            last_heartbeat: now.instant,
            load: Load::default(),
            remote: remote.clone(),
        };
        let name = registration.instance.clone();
        let outcome = match self.by_name.get_mut(&name) {
            None => {
                self.by_name.insert(name.clone(), fresh(0));
                Registered::New
            }
            Some(existing) if existing.peer == peer => {
                existing.registration = registration.clone();
                existing.state = InstanceState::Up;
                existing.last_heartbeat = now.instant;
                Registered::Again
            }
            Some(existing) => {
                let previous = (existing.state == InstanceState::Up).then(|| existing.peer.clone());
                let restarts = existing.restarts + 1;
                let handled = existing.handled;
                self.names.remove(&existing.peer);
                *existing = fresh(restarts);
                existing.handled = handled;
                Registered::Restarted { previous }
            }
        };
        self.names.insert(peer, name);
        outcome
    }

    /// Records a heartbeat; `false` if the peer is unknown.
    pub fn heartbeat(&mut self, peer: &Bytes, load: Load, now: Instant) -> bool {
        match self.instance_mut(peer) {
            Some(instance) if instance.state == InstanceState::Up => {
                instance.last_heartbeat = now;
                instance.load = load;
                true
            }
            _ => false,
        }
    }

    /// The instance behind a connection.
    pub fn instance(&self, peer: &Bytes) -> Option<&Instance> {
        self.by_name.get(self.names.get(peer)?)
    }

    /// The instance behind a connection, mutably.
    pub fn instance_mut(&mut self, peer: &Bytes) -> Option<&mut Instance> {
        self.by_name.get_mut(self.names.get(peer)?)
    }

    /// Marks an instance down; `true` if it was up.
    pub fn mark_down(&mut self, peer: &Bytes) -> bool {
        let Some(name) = self.names.remove(peer) else {
            return false;
        };
        match self.by_name.get_mut(&name) {
            Some(instance) if instance.state == InstanceState::Up => {
                instance.state = InstanceState::Down;
                instance.in_flight = 0;
                true
            }
            _ => false,
        }
    }

    /// Marks down every instance silent for longer than the heartbeat
    /// timeout, and returns their connections and names.
    pub fn expire(&mut self, now: Instant) -> Vec<(Bytes, String)> {
        let silent: Vec<(Bytes, String)> = self
            .by_name
            .iter()
            .filter(|(_, i)| {
                i.state == InstanceState::Up && now - i.last_heartbeat > self.heartbeat_timeout
            })
            .map(|(name, i)| (i.peer.clone(), name.clone()))
            .collect();
        silent
            .into_iter()
            .filter(|(peer, _)| self.mark_down(peer))
            .collect()
    }

    /// The up instance of `service` with the most free capacity, if any has some.
    pub fn pick(&self, service: ServiceKind) -> Option<Bytes> {
        self.by_name
            .values()
            .filter(|i| {
                i.registration.service == service
                    && i.state == InstanceState::Up
                    && i.in_flight < i.registration.capacity
            })
            .min_by_key(|i| relative_load(i))
            .map(|i| i.peer.clone())
    }

    /// The up instance of `service` least loaded relative to its capacity,
    /// whether or not it has room.
    pub fn least_loaded(&self, service: ServiceKind) -> Option<Bytes> {
        self.by_name
            .values()
            .filter(|i| i.registration.service == service && i.state == InstanceState::Up)
            .min_by_key(|i| relative_load(i))
            .map(|i| i.peer.clone())
    }

    /// Whether the instance behind `peer` has every label in `placement`.
    pub fn matches(&self, peer: &Bytes, placement: &[(String, String)]) -> bool {
        self.instance(peer)
            .is_some_and(|i| labels_match(placement, &i.registration.labels))
    }

    /// Whether an up instance of `service` has every label in `placement`.
    pub fn has_up_matching(&self, service: ServiceKind, placement: &[(String, String)]) -> bool {
        self.least_loaded_matching(service, placement).is_some()
    }

    /// The up instance of `service` with every label in `placement` that is
    /// least loaded relative to its capacity, whether or not it has room.
    pub fn least_loaded_matching(
        &self,
        service: ServiceKind,
        placement: &[(String, String)],
    ) -> Option<Bytes> {
        self.by_name
            .values()
            .filter(|i| {
                i.registration.service == service
                    && i.state == InstanceState::Up
                    && labels_match(placement, &i.registration.labels)
            })
            .min_by_key(|i| relative_load(i))
            .map(|i| i.peer.clone())
    }

    /// Whether any instance of `service` is up.
    pub fn has_up(&self, service: ServiceKind) -> bool {
        self.by_name
            .values()
            .any(|i| i.registration.service == service && i.state == InstanceState::Up)
    }

    /// The connections of every up instance.
    pub fn up_peers(&self) -> impl Iterator<Item = &Bytes> {
        self.by_name
            .values()
            .filter(|i| i.state == InstanceState::Up)
            .map(|i| &i.peer)
    }

    /// The status of every instance, with the kernel's queue depth per service.
    pub fn statuses(
        &self,
        queued: impl Fn(ServiceKind) -> usize,
        now: Instant,
    ) -> Vec<ServiceStatus> {
        let mut statuses: Vec<ServiceStatus> = self
            .by_name
            .iter()
            .map(|(name, i)| ServiceStatus {
                service: i.registration.service,
                instance: name.clone(),
                pid: i.registration.pid,
                state: i.state,
                capacity: i.registration.capacity,
                in_flight: i.in_flight,
                queued: queued(i.registration.service) as u32,
                inner_queue: i.load.queue_depth,
                workers: i.load.workers,
                restarts: i.restarts,
                handled: i.handled,
                up_since_ms: i.up_since_ms,
                heartbeat_age_ms: now.saturating_duration_since(i.last_heartbeat).as_millis()
                    as u64,
                host: i.registration.host.clone(),
                labels: i.registration.labels.clone(),
                remote: i.remote.clone(),
            })
            .collect();
        statuses.sort_by(|a, b| (a.service, &a.instance).cmp(&(b.service, &b.instance)));
        statuses
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(name: &str, capacity: u32) -> Registration {
        Registration {
            service: ServiceKind::Doer,
            instance: name.into(),
            pid: 1,
            capacity,
            host: "gw1".into(),
            labels: Vec::new(),
        }
    }

    #[test]
    fn a_new_incarnation_counts_as_a_restart() {
        let mut services = ServicesController::new(Duration::from_secs(2));
        let now = Now::read();
        let (a, b) = (Bytes::from_static(b"a"), Bytes::from_static(b"b"));
        assert_eq!(
            services.register(a.clone(), registration("doer-1", 4), None, now),
            Registered::New
        );
        assert_eq!(
            services.register(a.clone(), registration("doer-1", 4), None, now),
            Registered::Again
        );
        assert_eq!(
            services.register(b.clone(), registration("doer-1", 4), None, now),
            Registered::Restarted {
                previous: Some(a.clone())
            }
        );
        assert!(
            services.instance(&a).is_none(),
            "the old connection is forgotten"
        );
        assert_eq!(services.instance(&b).unwrap().restarts, 1);
        assert!(services.mark_down(&b));
        assert_eq!(
            services.register(a.clone(), registration("doer-1", 4), None, now),
            Registered::Restarted { previous: None }
        );
        assert_eq!(services.statuses(|_| 0, now.instant)[0].restarts, 2);
    }

    #[test]
    fn dispatch_picks_the_least_loaded_instance_with_room() {
        let mut services = ServicesController::new(Duration::from_secs(2));
        let now = Now::read();
        let (a, b) = (Bytes::from_static(b"a"), Bytes::from_static(b"b"));
        services.register(a.clone(), registration("doer-1", 2), None, now);
        services.register(b.clone(), registration("doer-2", 4), None, now);
        services.instance_mut(&a).unwrap().in_flight = 1; // half full
        services.instance_mut(&b).unwrap().in_flight = 1; // a quarter full
        assert_eq!(services.pick(ServiceKind::Doer), Some(b.clone()));
        services.instance_mut(&b).unwrap().in_flight = 4;
        assert_eq!(services.pick(ServiceKind::Doer), Some(a.clone()));
        services.instance_mut(&a).unwrap().in_flight = 2;
        assert_eq!(services.pick(ServiceKind::Doer), None, "no capacity left");
        assert_eq!(services.pick(ServiceKind::Resadmin), None);
    }

    #[test]
    fn calls_one_at_a_time_take_turns() {
        let mut services = ServicesController::new(Duration::from_secs(2));
        let now = Now::read();
        let (a, b) = (Bytes::from_static(b"a"), Bytes::from_static(b"b"));
        services.register(a.clone(), registration("doer-1", 64), None, now);
        services.register(b.clone(), registration("doer@shed", 4), None, now);
        let mut picked = Vec::new();
        for _ in 0..4 {
            let peer = services.pick(ServiceKind::Doer).unwrap();
            services.instance_mut(&peer).unwrap().handled += 1;
            picked.push(peer);
        }
        assert_eq!(picked.iter().filter(|p| **p == a).count(), 2, "{picked:?}");
        assert_eq!(picked.iter().filter(|p| **p == b).count(), 2, "{picked:?}");
    }

    #[test]
    fn silent_instances_go_down() {
        let mut services = ServicesController::new(Duration::from_millis(100));
        let start = Now::read();
        let a = Bytes::from_static(b"a");
        services.register(a.clone(), registration("doer-1", 2), None, start);
        assert!(
            services
                .expire(start.instant + Duration::from_millis(50))
                .is_empty()
        );
        assert!(services.heartbeat(
            &a,
            Load::default(),
            start.instant + Duration::from_millis(80)
        ));
        assert!(
            services
                .expire(start.instant + Duration::from_millis(150))
                .is_empty()
        );
        assert_eq!(
            services.expire(start.instant + Duration::from_millis(300)),
            vec![(a.clone(), "doer-1".to_string())]
        );
        assert!(!services.has_up(ServiceKind::Doer));
        assert!(
            !services.heartbeat(&a, Load::default(), start.instant),
            "a down instance must register again"
        );
    }
}
