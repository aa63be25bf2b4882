//! The jobs waiting to run, shared fairly between projects: each project
//! has its own line (by due time), and the dispatcher takes the next due
//! job from the project after the one it served last, so a project that
//! floods its triggers queues behind itself, not in front of everyone —
//! the same rule as the kernel's fair queue, before the kernel sees them.
//!
//! It also counts the jobs recorded and not yet settled: past the
//! configured bound, whoever records new jobs (the broker, or the client of
//! an external broker) waits for [`JobQueue::room`] before acknowledging
//! more, so the devices' own windows hold the rest.

use crate::store::Job;
use isms_ipc::ProjectName;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;

/// The dispatcher's queue.
pub struct JobQueue {
    lines: Mutex<Lines>,
    /// Something was queued.
    queued: Notify,
    /// Recorded and not yet settled.
    pending: AtomicUsize,
    max_pending: usize,
    /// A job was settled.
    settled: Notify,
}

#[derive(Default)]
struct Lines {
    /// Each project's jobs by (due, row).
    by_project: BTreeMap<ProjectName, BTreeMap<(u64, u64), Job>>,
    /// Projects in the order they are served; the front is next.
    turn: VecDeque<ProjectName>,
}

/// What the dispatcher should do next.
pub enum Next {
    /// Run this job.
    Run(Job),
    /// Nothing due for this many milliseconds.
    Wait(u64),
    /// Nothing queued.
    Idle,
}

impl JobQueue {
    /// A queue that holds back new work past `max_pending` recorded jobs.
    pub fn new(max_pending: usize) -> JobQueue {
        JobQueue {
            lines: Mutex::new(Lines::default()),
            queued: Notify::new(),
            pending: AtomicUsize::new(0),
            max_pending: max_pending.max(1),
            settled: Notify::new(),
        }
    }

    fn lines(&self) -> std::sync::MutexGuard<'_, Lines> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Jobs newly recorded (or recorded before a restart).
    pub fn recorded(&self, jobs: Vec<Job>) {
        self.pending.fetch_add(jobs.len(), Ordering::Relaxed);
        self.requeue(jobs);
    }

    /// Jobs already counted, back in line (a retry).
    pub fn requeue(&self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        let mut lines = self.lines();
        for job in jobs {
            let project = job.project.clone();
            let waiting = lines
                .by_project
                .get(&project)
                .is_some_and(|l| !l.is_empty());
            if !waiting && !lines.turn.contains(&project) {
                lines.turn.push_back(project.clone());
            }
            lines
                .by_project
                .entry(project)
                .or_default()
                .insert((job.due_ms, job.id), job);
        }
        drop(lines);
        self.queued.notify_one();
    }

    /// The next job due now, taking projects in turn.
    pub fn next(&self, now_ms: u64) -> Next {
        let mut lines = self.lines();
        let mut soonest: Option<u64> = None;
        for _ in 0..lines.turn.len() {
            let Some(project) = lines.turn.pop_front() else {
                break;
            };
            let line = lines.by_project.get_mut(&project);
            let Some(line) = line else { continue };
            match line.first_key_value().map(|(&(due, _), _)| due) {
                Some(due) if due <= now_ms => {
                    let job = line.pop_first().map(|(_, job)| job);
                    if line.is_empty() {
                        lines.by_project.remove(&project);
                    } else {
                        lines.turn.push_back(project);
                    }
                    if let Some(job) = job {
                        return Next::Run(job);
                    }
                }
                Some(due) => {
                    soonest = Some(soonest.map_or(due, |s: u64| s.min(due)));
                    lines.turn.push_back(project);
                }
                None => {
                    lines.by_project.remove(&project);
                }
            }
        }
        match soonest {
            Some(due) => Next::Wait(due.saturating_sub(now_ms)),
            None => Next::Idle,
        }
    }

    /// Waits until something is queued.
    pub async fn wait_queued(&self) {
        self.queued.notified().await;
    }

    /// A job left for good (done or dead).
    pub fn settled(&self) {
        self.pending.fetch_sub(1, Ordering::Relaxed);
        self.settled.notify_waiters();
    }

    /// Jobs recorded and not yet settled.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// How many more jobs may be recorded now.
    pub fn room_left(&self) -> usize {
        self.max_pending.saturating_sub(self.pending())
    }

    /// Whether new jobs may be recorded now.
    pub fn has_room(&self) -> bool {
        self.pending() < self.max_pending
    }

    /// Returns once new jobs may be recorded.
    pub async fn room(&self) {
        loop {
            let settled = self.settled.notified();
            if self.has_room() {
                return;
            }
            settled.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use isms_ipc::DoeeName;

    fn job(project: &str, id: u64, due_ms: u64) -> Job {
        Job {
            id,
            project: ProjectName::new(project).unwrap(),
            doee: DoeeName::new("d").unwrap(),
            topic: format!("{project}/t"),
            reply_topic: None,
            payload: Bytes::new(),
            received_ms: 0,
            attempts: 0,
            due_ms,
        }
    }

    fn run(queue: &JobQueue, now: u64) -> Option<(String, u64)> {
        match queue.next(now) {
            Next::Run(job) => Some((job.project.to_string(), job.id)),
            _ => None,
        }
    }

    #[test]
    fn projects_are_served_in_turn_whatever_their_backlog() {
        let queue = JobQueue::new(100);
        queue.recorded((1..=5).map(|i| job("flood", i, 0)).collect());
        queue.recorded(vec![job("light", 6, 0)]);
        assert_eq!(run(&queue, 10), Some(("flood".into(), 1)));
        assert_eq!(run(&queue, 10), Some(("light".into(), 6)), "light's turn");
        assert_eq!(run(&queue, 10), Some(("flood".into(), 2)));
        assert_eq!(queue.pending(), 6);
    }

    #[test]
    fn jobs_wait_for_their_due_time_and_room_is_counted() {
        let queue = JobQueue::new(2);
        queue.recorded(vec![job("a", 1, 50), job("b", 2, 30)]);
        assert!(matches!(queue.next(10), Next::Wait(20)));
        assert!(!queue.has_room());
        assert_eq!(run(&queue, 30), Some(("b".into(), 2)));
        queue.settled();
        assert!(queue.has_room());
        assert_eq!(run(&queue, 60), Some(("a".into(), 1)));
        assert!(matches!(queue.next(60), Next::Idle));
    }
}
