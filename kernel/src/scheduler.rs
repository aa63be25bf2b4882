//! The Scheduler: one ready queue per target service, a red-black tree
//! ordered so the highest-priority, least-served request is leftmost.
//!
//! Fairness between projects is CFS-like, in the form of start-time fair
//! queueing: every project has a virtual runtime, the virtual time at which
//! the work it has been given (queued or done) ends. A request is tagged with
//! `start = max(project's virtual runtime, queue's virtual clock)` and the
//! project's virtual runtime grows by the request's expected cost, plus the
//! excess when a request turns out longer than expected. It is never
//! refunded: a refund would let a backlogged project's next requests bunch
//! at one start tag and then burst ahead of everyone. A project that floods
//! spaces out its own requests in virtual time, so a project that sends one
//! request now starts at the current virtual clock and is served next. A
//! project that was idle starts at the clock too: idling earns no credit.
//!
//! Keys are `(priority class, start, arrival)`: classes are strict, `start`
//! gives fairness within a class, arrival breaks ties (and makes every key
//! unique, which the `rb_tree` set requires).
//!
//! The queue also counts each project's requests in flight at the service,
//! so that a project with none can always get one through, even when every
//! instance is full ([`ReadyQueue::pop_newcomer`]): a service that shares
//! out slots (the Doer's Workers) then sees the newcomer, and can make room
//! for it, instead of the newcomer waiting for other projects' long work.

use isms_ipc::{Priority, ProjectName};
use rb_tree::RBTree;
use std::collections::{BTreeSet, HashMap};

/// A position in a ready queue; also the handle to remove that entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    class: Priority,
    start: u64,
    arrival: u64,
}

/// The cost assumed for a project's request before any has completed, in µs.
const INITIAL_COST_US: u64 = 200;

/// Bounds on one ready queue.
#[derive(Clone, Copy, Debug)]
pub struct QueueLimits {
    /// Requests waiting for the service, all projects together.
    pub total: usize,
    /// Requests waiting for the service from one project.
    pub per_project: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            total: 4096,
            per_project: 1024,
        }
    }
}

/// Why a request was not queued.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The queue holds `total` requests.
    #[error("the queue for this service is full ({0} waiting)")]
    Full(usize),
    /// The project already has `per_project` requests waiting.
    #[error("this project has {0} requests waiting for this service")]
    ProjectFull(usize),
}

/// What the Scheduler hands back when a request leaves the queue.
#[derive(Debug, PartialEq)]
pub struct Dispatched<T> {
    /// The queued item.
    pub item: T,
    /// What was charged to the project's virtual runtime, to correct on
    /// [`ReadyQueue::complete`].
    pub charge: Charge,
}

/// A charge to a project's virtual runtime, settled when the work completes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    project: Option<ProjectName>,
    estimated_us: u64,
}

impl Charge {
    /// The project charged, if the work acts for one.
    pub fn project(&self) -> Option<&ProjectName> {
        self.project.as_ref()
    }
}

#[derive(Debug)]
struct Entry<T> {
    item: T,
    charge: Charge,
}

#[derive(Debug)]
struct ProjectClock {
    /// The project's virtual runtime.
    vruntime: u64,
    /// Its smoothed cost per request, in µs.
    cost_us: u64,
    /// Its requests waiting, in queue order.
    queued: BTreeSet<Key>,
    /// Its requests dispatched and not yet settled.
    in_flight: usize,
}

/// One target service's ready queue.
pub struct ReadyQueue<T> {
    tree: RBTree<Key>,
    entries: HashMap<Key, Entry<T>>,
    projects: HashMap<Option<ProjectName>, ProjectClock>,
    clock: u64,
    arrivals: u64,
    limits: QueueLimits,
}

impl<T> ReadyQueue<T> {
    /// An empty queue.
    pub fn new(limits: QueueLimits) -> Self {
        ReadyQueue {
            tree: RBTree::new(),
            entries: HashMap::new(),
            projects: HashMap::new(),
            clock: 0,
            arrivals: 0,
            limits,
        }
    }

    /// Requests waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Queues an item for `project` in `class`.
    pub fn push(
        &mut self,
        project: Option<ProjectName>,
        class: Priority,
        item: T,
    ) -> Result<Key, Refused> {
        if self.entries.len() >= self.limits.total {
            return Err(Refused::Full(self.entries.len()));
        }
        let clock = self.clock;
        let state = self
            .projects
            .entry(project.clone())
            .or_insert(ProjectClock {
                vruntime: clock,
                cost_us: INITIAL_COST_US,
                queued: BTreeSet::new(),
                in_flight: 0,
            });
        if state.queued.len() >= self.limits.per_project {
            return Err(Refused::ProjectFull(state.queued.len()));
        }
        let start = state.vruntime.max(clock);
        state.vruntime = start + state.cost_us;
        let charge = Charge {
            project,
            estimated_us: state.cost_us,
        };
        self.arrivals += 1;
        let key = Key {
            class,
            start,
            arrival: self.arrivals,
        };
        state.queued.insert(key);
        self.tree.insert(key);
        self.entries.insert(key, Entry { item, charge });
        Ok(key)
    }

    /// Takes the leftmost item, for dispatch: the highest class, then the
    /// least-served project.
    pub fn pop(&mut self) -> Option<Dispatched<T>> {
        let key = self.tree.pop()?;
        self.dispatched(key)
    }

    /// Takes, for dispatch, the first item of the project that has nothing
    /// in flight and whose first item comes first: the one a full service
    /// still takes.
    pub fn pop_newcomer(&mut self) -> Option<Dispatched<T>> {
        let key = self
            .projects
            .values()
            .filter(|p| p.in_flight == 0)
            .filter_map(|p| p.queued.first().copied())
            .min()?;
        self.tree.remove(&key);
        self.dispatched(key)
    }

    /// Takes one item, for dispatch out of turn (a chained call). The
    /// queue's clock stays: the item's start says nothing of the others'.
    pub fn take(&mut self, key: Key) -> Option<Dispatched<T>> {
        if !self.tree.remove(&key) {
            return None;
        }
        self.entry_out(key)
    }

    fn dispatched(&mut self, key: Key) -> Option<Dispatched<T>> {
        self.clock = self.clock.max(key.start);
        self.entry_out(key)
    }

    fn entry_out(&mut self, key: Key) -> Option<Dispatched<T>> {
        let entry = self.entries.remove(&key)?;
        if let Some(state) = self.projects.get_mut(&entry.charge.project) {
            state.queued.remove(&key);
            state.in_flight += 1;
        }
        Some(Dispatched {
            item: entry.item,
            charge: entry.charge,
        })
    }

    /// Removes an item before it was dispatched (its deadline passed). Its
    /// charge is not refunded, for the reason given in the module docs.
    pub fn remove(&mut self, key: Key) -> Option<T> {
        if !self.tree.remove(&key) {
            return None;
        }
        let entry = self.entries.remove(&key)?;
        if let Some(state) = self.projects.get_mut(&entry.charge.project) {
            state.queued.remove(&key);
        }
        Some(entry.item)
    }

    /// Settles a charge with the real service time (charging any excess),
    /// and learns the project's cost for its next requests.
    pub fn complete(&mut self, charge: Charge, actual_us: u64) {
        if let Some(state) = self.projects.get_mut(&charge.project) {
            state.vruntime += actual_us.saturating_sub(charge.estimated_us);
            state.cost_us = ((state.cost_us * 7 + actual_us) / 8).max(1);
        }
        self.abandon(charge);
    }

    /// Settles a charge whose work never answered (its instance died, or
    /// never replied): no longer in flight, nothing learnt.
    pub fn abandon(&mut self, charge: Charge) {
        let clock = self.clock;
        let Some(state) = self.projects.get_mut(&charge.project) else {
            return;
        };
        state.in_flight = state.in_flight.saturating_sub(1);
        // Forget projects with nothing queued or in flight once the clock
        // has passed them: they would start at the clock anyway.
        if state.queued.is_empty() && state.in_flight == 0 && state.vruntime <= clock {
            self.projects.remove(&charge.project);
        }
    }

    /// The project's virtual runtime (for tests and status).
    pub fn vruntime(&self, project: &Option<ProjectName>) -> Option<u64> {
        self.projects.get(project).map(|p| p.vruntime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(name: &str) -> Option<ProjectName> {
        Some(ProjectName::new(name).unwrap())
    }

    fn queue() -> ReadyQueue<u32> {
        ReadyQueue::new(QueueLimits {
            total: 100_000,
            per_project: 100_000,
        })
    }

    #[test]
    fn higher_classes_go_first_then_arrival() {
        let mut q = queue();
        q.push(p("a"), Priority::Low, 1).unwrap();
        q.push(p("a"), Priority::Normal, 2).unwrap();
        q.push(p("a"), Priority::High, 3).unwrap();
        q.push(p("a"), Priority::Normal, 4).unwrap();
        let order: Vec<_> = std::iter::from_fn(|| q.pop().map(|d| d.item)).collect();
        assert_eq!(order, vec![3, 2, 4, 1]);
    }

    #[test]
    fn newcomers_are_projects_with_nothing_in_flight_first_come_first() {
        let mut q = queue();
        q.push(p("flood"), Priority::Normal, 1).unwrap();
        q.push(p("flood"), Priority::Normal, 2).unwrap();
        let first = q.pop().unwrap();
        assert_eq!(first.item, 1);
        assert_eq!(q.pop_newcomer(), None, "flood has one in flight");
        q.push(p("b"), Priority::Low, 3).unwrap();
        q.push(p("c"), Priority::High, 4).unwrap();
        q.push(p("c"), Priority::Normal, 5).unwrap();
        assert_eq!(q.pop_newcomer().unwrap().item, 4, "the higher class first");
        assert_eq!(q.pop_newcomer().unwrap().item, 3);
        assert_eq!(q.pop_newcomer(), None);
        q.abandon(first.charge);
        assert_eq!(q.pop_newcomer().unwrap().item, 2, "flood's work is settled");
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn a_newcomer_is_served_before_a_flood() {
        let mut q = queue();
        for i in 0..1000 {
            q.push(p("flood"), Priority::Normal, i).unwrap();
        }
        for _ in 0..10 {
            let d = q.pop().unwrap();
            q.complete(d.charge, INITIAL_COST_US);
        }
        q.push(p("light"), Priority::Normal, 9999).unwrap();
        assert_eq!(q.pop().unwrap().item, 9999, "the light project goes next");
    }

    /// Both projects always have work waiting; with equal costs they share
    /// the service half and half.
    #[test]
    fn backlogged_projects_share_equally() {
        let mut q = queue();
        for i in 0..500 {
            q.push(p("a"), Priority::Normal, i).unwrap();
        }
        for i in 0..500 {
            q.push(p("b"), Priority::Normal, 1000 + i).unwrap();
        }
        let mut served_a = 0;
        for _ in 0..400 {
            let d = q.pop().unwrap();
            if d.item < 1000 {
                served_a += 1;
            }
            q.complete(d.charge, 100);
        }
        assert!(
            (190..=210).contains(&served_a),
            "a served {served_a} of 400"
        );
    }

    /// Fairness is in time, not in count: a project whose requests take
    /// three times as long gets a third as many of them.
    #[test]
    fn fairness_follows_service_time() {
        let mut q = queue();
        let mut next = 0;
        let mut served = [0u32; 2];
        let mut time = [0u64; 2];
        for _ in 0..50 {
            for who in 0..2 {
                q.push(
                    if who == 0 { p("heavy") } else { p("light") },
                    Priority::Normal,
                    who,
                )
                .unwrap();
            }
        }
        while next < 2000 {
            let d = q.pop().unwrap();
            let who = d.item as usize;
            let cost = if who == 0 { 300 } else { 100 };
            served[who] += 1;
            time[who] += cost;
            q.complete(d.charge, cost);
            // Keep both backlogged.
            q.push(
                if who == 0 { p("heavy") } else { p("light") },
                Priority::Normal,
                d.item,
            )
            .unwrap();
            next += 1;
        }
        let ratio = time[0] as f64 / time[1] as f64;
        assert!(
            (0.9..1.1).contains(&ratio),
            "service time ratio {ratio}, served {served:?}"
        );
    }

    /// A light project sending one request at a time while another keeps
    /// 64 waiting: the light request never waits behind more than one other.
    #[test]
    fn a_light_project_waits_for_at_most_one_flood_request() {
        let mut q = queue();
        for i in 0..64 {
            q.push(p("flood"), Priority::Normal, i).unwrap();
        }
        let mut worst_wait = 0;
        for round in 0..200 {
            q.push(p("light"), Priority::Normal, 10_000 + round)
                .unwrap();
            let mut waited = 0;
            loop {
                let d = q.pop().unwrap();
                q.complete(d.charge, 100);
                if d.item >= 10_000 {
                    break;
                }
                waited += 1;
                q.push(p("flood"), Priority::Normal, d.item).unwrap();
            }
            worst_wait = worst_wait.max(waited);
        }
        assert!(
            worst_wait <= 1,
            "the light project waited behind {worst_wait}"
        );
    }

    #[test]
    fn an_idle_project_earns_no_credit() {
        let mut q = queue();
        q.push(p("a"), Priority::Normal, 0).unwrap();
        let d = q.pop().unwrap();
        q.complete(d.charge, 100);
        // b works for a long time while a idles.
        for i in 0..100 {
            q.push(p("b"), Priority::Normal, i).unwrap();
            let d = q.pop().unwrap();
            q.complete(d.charge, 100);
        }
        for i in 0..10 {
            q.push(p("b"), Priority::Normal, 100 + i).unwrap();
        }
        q.push(p("a"), Priority::Normal, 999).unwrap();
        // a goes next, but only once: then the two alternate.
        let order: Vec<_> = (0..4)
            .map(|_| {
                let d = q.pop().unwrap();
                q.complete(d.charge, 100);
                d.item
            })
            .collect();
        assert_eq!(order[0], 999);
        assert!(
            order[1..].iter().all(|&i| (100..999).contains(&i)),
            "{order:?}"
        );
    }

    #[test]
    fn limits_answer_busy() {
        let mut q = ReadyQueue::new(QueueLimits {
            total: 3,
            per_project: 2,
        });
        q.push(p("a"), Priority::Normal, 1).unwrap();
        q.push(p("a"), Priority::Normal, 2).unwrap();
        assert_eq!(
            q.push(p("a"), Priority::Normal, 3),
            Err(Refused::ProjectFull(2))
        );
        q.push(p("b"), Priority::Normal, 4).unwrap();
        assert_eq!(q.push(p("c"), Priority::Normal, 5), Err(Refused::Full(3)));
        q.pop().unwrap();
        q.push(p("c"), Priority::Normal, 5).unwrap();
    }

    #[test]
    fn removal_frees_room() {
        let mut q = ReadyQueue::new(QueueLimits {
            total: 10,
            per_project: 1,
        });
        let key = q.push(p("a"), Priority::Normal, 1).unwrap();
        assert_eq!(q.remove(key), Some(1));
        assert_eq!(q.remove(key), None, "removing twice finds nothing");
        q.push(p("a"), Priority::Normal, 2).unwrap();
        assert_eq!(q.len(), 1);
    }

    /// A request longer than estimated is charged in full, so the project's
    /// next request starts later.
    #[test]
    fn long_requests_are_charged_in_full() {
        let mut q = queue();
        q.push(p("a"), Priority::Normal, 1).unwrap();
        let before = q.vruntime(&p("a")).unwrap();
        let d = q.pop().unwrap();
        q.complete(d.charge, INITIAL_COST_US + 5000);
        assert_eq!(q.vruntime(&p("a")).unwrap(), before + 5000);
    }

    proptest! {
        /// Whatever the sequence of pushes, pops and removals, the queue pops
        /// in non-decreasing class order at each step's head, never loses or
        /// duplicates an item, and keeps its counts consistent.
        #[test]
        fn queue_invariants(ops in proptest::collection::vec((0u8..4, 0u8..3, 0u8..3, 1u64..500), 1..400)) {
            let mut q = ReadyQueue::new(QueueLimits { total: 50, per_project: 20 });
            let mut live: HashMap<u32, Key> = HashMap::new();
            let mut next = 0u32;
            for (op, project, class, cost) in ops {
                let project = p(["a", "b", "c"][project as usize]);
                let class = [Priority::High, Priority::Normal, Priority::Low][class as usize];
                match op {
                    0 | 1 => {
                        if let Ok(key) = q.push(project, class, next) {
                            live.insert(next, key);
                        }
                        next += 1;
                    }
                    2 => {
                        if let Some(d) = q.pop() {
                            let key = live.remove(&d.item).expect("popped an unknown item");
                            let best = live.values().min().copied();
                            if let Some(best) = best {
                                prop_assert!(best.class >= key.class, "a higher class was left waiting");
                            }
                            q.complete(d.charge, cost);
                        }
                    }
                    _ => {
                        if let Some((&item, &key)) = live.iter().next() {
                            prop_assert_eq!(q.remove(key), Some(item));
                            live.remove(&item);
                        }
                    }
                }
                prop_assert_eq!(q.len(), live.len());
            }
        }
    }
}
