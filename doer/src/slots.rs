//! Who gets the Doer's Worker slots when there are not enough for everyone.
//!
//! The kernel's fair queue decides whose invocations reach the Doer, and
//! always lets a project with nothing in flight through (see the kernel's
//! Scheduler). The Doer then shares its `max_workers` slots by the same
//! rule, between the projects that hold Workers or wait for one:
//!
//! - a project's *fair share* is `max_workers / projects`;
//! - a freed slot goes to the waiting project that holds the fewest
//!   Workers: a Worker that finishes a task is handed over rather than
//!   reused when its project holds at least two more than a waiting one;
//! - a project that holds no Worker at all gets one at once: the longest
//!   running invocation of the project holding the most Workers, if that is
//!   more than its fair share, is stopped ([`preemption_victim`]). So a
//!   newcomer waits a Worker's start, not another project's timeouts, and a
//!   project that stays within its fair share is never preempted.

use crate::worker::WorkerId;
use isms_ipc::ProjectName;
use std::collections::HashMap;
use std::time::Instant;

/// One live Worker, as the policy sees it.
#[derive(Clone, Copy, Debug)]
pub struct Slot<'a> {
    /// Whose it is.
    pub project: &'a ProjectName,
    /// Which Worker.
    pub worker: WorkerId,
    /// Since when it runs a task, if it does.
    pub busy_since: Option<Instant>,
}

/// Workers held per project.
pub fn held<'a>(slots: &[Slot<'a>]) -> HashMap<&'a ProjectName, usize> {
    let mut held = HashMap::new();
    for slot in slots {
        *held.entry(slot.project).or_insert(0) += 1;
    }
    held
}

/// A project's fair share of `capacity` slots among `projects` projects.
pub fn fair_share(capacity: usize, projects: usize) -> usize {
    (capacity / projects.max(1)).max(1)
}

/// The busy Worker to stop so that a project holding none gets one: the
/// longest-running one of the project holding the most Workers, when that
/// project holds more than its fair share. `projects` counts the projects
/// that hold Workers or wait for one, the starved one included.
pub fn preemption_victim(slots: &[Slot<'_>], capacity: usize, projects: usize) -> Option<WorkerId> {
    let share = fair_share(capacity, projects);
    let held = held(slots);
    let (&richest, &most) = held
        .iter()
        .max_by_key(|&(project, count)| (*count, *project))?;
    if most <= share {
        return None;
    }
    slots
        .iter()
        .filter(|s| s.project == richest)
        .filter_map(|s| Some((s.busy_since?, s.worker)))
        .min()
        .map(|(_, worker)| worker)
}

/// Whether a Worker of a project holding `owner_holds` Workers, which just
/// finished a task, should go to a waiting project holding `waiter_holds`.
pub fn hand_over(owner_holds: usize, waiter_holds: usize) -> bool {
    waiter_holds + 1 < owner_holds
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn p(name: &str) -> ProjectName {
        ProjectName::new(name).unwrap()
    }

    #[test]
    fn the_longest_running_worker_of_the_richest_project_is_preempted() {
        let (a, b) = (p("a"), p("b"));
        let t0 = Instant::now();
        let at = |ms| Some(t0 + Duration::from_millis(ms));
        // 8 slots: a holds 5 (one idle), b holds 3; c arrives: share 8/3 = 2.
        let slots = [
            Slot {
                project: &a,
                worker: 1,
                busy_since: at(30),
            },
            Slot {
                project: &a,
                worker: 2,
                busy_since: at(10),
            },
            Slot {
                project: &a,
                worker: 3,
                busy_since: None,
            },
            Slot {
                project: &a,
                worker: 4,
                busy_since: at(20),
            },
            Slot {
                project: &a,
                worker: 5,
                busy_since: at(40),
            },
            Slot {
                project: &b,
                worker: 6,
                busy_since: at(0),
            },
            Slot {
                project: &b,
                worker: 7,
                busy_since: at(5),
            },
            Slot {
                project: &b,
                worker: 8,
                busy_since: at(6),
            },
        ];
        assert_eq!(preemption_victim(&slots, 8, 3), Some(2));
    }

    #[test]
    fn projects_within_their_share_are_never_preempted() {
        let names: Vec<ProjectName> = (0..8).map(|i| p(&format!("p{i}"))).collect();
        let slots: Vec<Slot> = names
            .iter()
            .enumerate()
            .map(|(i, project)| Slot {
                project,
                worker: i as u64,
                busy_since: Some(Instant::now()),
            })
            .collect();
        // Eight projects with one Worker each, a ninth arrives: each of the
        // eight holds its fair share (8 / 9 rounds up to one slot).
        assert_eq!(preemption_victim(&slots, 8, 9), None);
        assert_eq!(preemption_victim(&[], 8, 1), None);
    }

    #[test]
    fn a_finished_worker_goes_to_whoever_holds_fewer_by_two() {
        assert!(hand_over(4, 0));
        assert!(hand_over(3, 1));
        assert!(!hand_over(2, 1), "2 and 1 is as even as it gets");
        assert!(!hand_over(1, 0), "handing over would only swap who waits");
        assert_eq!(fair_share(64, 3), 21);
        assert_eq!(fair_share(4, 9), 1);
        assert_eq!(fair_share(4, 0), 4);
    }
}
