//! Counters and latency histograms of recorded invocations, kept in memory
//! for `/metrics`. They restart from zero with Resadmin, which Prometheus
//! reads as a counter reset.

use isms_ipc::resadmin::{DoeeStats, InvocationRecord, InvocationStatus, LATENCY_BUCKETS_US};
use isms_ipc::{DoeeName, ProjectName};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Every Doee's counters.
#[derive(Default)]
pub struct Stats(Mutex<BTreeMap<(ProjectName, DoeeName), Counters>>);

#[derive(Default)]
struct Counters {
    by_status: [u64; InvocationStatus::ALL.len()],
    buckets: [u64; LATENCY_BUCKETS_US.len() + 1],
    sum_us: u64,
}

impl Stats {
    /// Counts finished invocations (pending ones are counted when they end).
    pub fn add(&self, records: &[InvocationRecord]) {
        let Ok(mut stats) = self.0.lock() else {
            return;
        };
        for record in records {
            if record.status == InvocationStatus::Pending {
                continue;
            }
            let counters = stats
                .entry((record.project.clone(), record.doee.clone()))
                .or_default();
            let status = InvocationStatus::ALL
                .iter()
                .position(|s| *s == record.status)
                .unwrap_or(0);
            counters.by_status[status] += 1;
            let bucket = LATENCY_BUCKETS_US
                .iter()
                .position(|bound| record.duration_us <= *bound)
                .unwrap_or(LATENCY_BUCKETS_US.len());
            counters.buckets[bucket] += 1;
            counters.sum_us += record.duration_us;
        }
    }

    /// A copy of every Doee's counters.
    pub fn snapshot(&self) -> Vec<DoeeStats> {
        let Ok(stats) = self.0.lock() else {
            return Vec::new();
        };
        stats
            .iter()
            .map(|((project, doee), counters)| DoeeStats {
                project: project.clone(),
                doee: doee.clone(),
                by_status: InvocationStatus::ALL
                    .iter()
                    .zip(counters.by_status)
                    .filter(|(status, _)| **status != InvocationStatus::Pending)
                    .map(|(status, n)| (*status, n))
                    .collect(),
                latency_buckets: counters.buckets.to_vec(),
                latency_sum_us: counters.sum_us,
            })
            .collect()
    }
}
