//! Schedule triggers: each schedule of an active version fires at its
//! moments, one invocation per firing, recorded with trigger `schedule`.
//!
//! Every CommServer runs every schedule; Resadmin's durable claim
//! ([`ClaimFiring`]) makes one of them run each firing. A firing is
//! claimed before it runs and reported when it ends, so Resadmin knows
//! whether the previous one still runs: then the firing is skipped (and
//! counted) or waits for it (`overlap = "queue"`, one firing waiting at a
//! time). After downtime, or a firing later than [`LATE`], the missed
//! firings follow `catch_up`: the last of them runs once, or none. A
//! firing whose claim could not be made, or whose invocation no Doer took,
//! does not run: schedules run each firing at most once.

use crate::pipeline;
use crate::routes::Routes;
use isms_ipc::connection::Scope;
use isms_ipc::doer::Trigger;
use isms_ipc::names::now_ms;
use isms_ipc::resadmin::{
    CatchUp, ClaimFiring, Firing, FiringDone, ScheduleRoute, ScheduleTrigger,
};
use isms_ipc::{Connection, InvocationId};
use isms_schedule::Clock;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A firing this much past its moment is a missed one (the CommServer was
/// down, or stalled): `catch_up` decides.
const LATE: Duration = Duration::from_secs(5);

/// How often a queued firing asks again whether the previous one ended.
const WAIT_POLL: Duration = Duration::from_millis(200);

/// How long a claim is retried while Resadmin cannot answer.
const CLAIM_PATIENCE: Duration = Duration::from_secs(30);

/// Runs the schedules of each trigger table loaded: new ones start, gone
/// or changed ones stop (after the firing they are in). Never returns.
pub async fn keep_firing(routes: Arc<Routes>, conn: Connection, queue_allowance: Duration) {
    let mut changes = routes.changes();
    let mut running: Vec<(Arc<ScheduleRoute>, watch::Sender<bool>)> = Vec::new();
    loop {
        let table = routes.schedules();
        running.retain(|(route, stop)| {
            let kept = table.iter().any(|r| r == route);
            if !kept {
                let _ = stop.send(true);
            }
            kept
        });
        for route in table {
            if running.iter().any(|(r, _)| *r == route) {
                continue;
            }
            let (stop, stopped) = watch::channel(false);
            let schedule = Schedule {
                route: route.clone(),
                conn: conn.clone(),
                queue_allowance,
            };
            tokio::spawn(schedule.run(stopped));
            running.push((route, stop));
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// One schedule, fired by this CommServer.
struct Schedule {
    route: Arc<ScheduleRoute>,
    conn: Connection,
    queue_allowance: Duration,
}

impl Schedule {
    fn trigger(&self) -> &ScheduleTrigger {
        &self.route.trigger
    }

    async fn run(self, mut stopped: watch::Receiver<bool>) {
        let target = &self.route.target;
        let clock = match Clock::new(&self.trigger().when) {
            Ok(clock) => clock,
            Err(why) => {
                // Checked at deploy: only a stored manifest from elsewhere.
                tracing::error!(project = %target.project, doee = %target.doee, schedule = %self.trigger().when, %why, "schedule cannot fire");
                return;
            }
        };
        tracing::debug!(project = %target.project, doee = %target.doee, schedule = %self.trigger().when, "schedule armed");
        // What was missed before this start. (If another CommServer fires
        // that moment on time, one of the two claims it.)
        let mut last = now_ms();
        if self.trigger().catch_up == CatchUp::Last
            && let Some(slot) = clock.last_at_or_before(last)
        {
            self.fire(slot, true, &mut stopped).await;
        }
        loop {
            let Some(slot) = clock.next_after(last) else {
                tracing::info!(project = %target.project, doee = %target.doee, schedule = %self.trigger().when, "schedule has no further firing");
                return;
            };
            let wait = Duration::from_millis(slot.saturating_sub(now_ms()));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stopped.wait_for(|stop| *stop) => return,
            }
            let now = now_ms();
            if now > slot + LATE.as_millis() as u64 {
                last = now;
                if self.trigger().catch_up == CatchUp::Last
                    && let Some(missed) = clock.last_at_or_before(now)
                {
                    self.fire(missed, true, &mut stopped).await;
                }
                continue;
            }
            self.fire(slot, false, &mut stopped).await;
            last = slot;
        }
    }

    /// Claims the firing at `slot` and, if it is this CommServer's, starts
    /// it. A queued firing waits here for the previous one to end.
    async fn fire(&self, slot: u64, late: bool, stopped: &mut watch::Receiver<bool>) {
        let target = &self.route.target;
        let run = Duration::from_millis(u64::from(target.timeout_ms)) + self.queue_allowance;
        // Every attempt at this firing claims as one claimant.
        let id = InvocationId::generate();
        let claim = ClaimFiring {
            doee: target.doee.clone(),
            when: self.trigger().when.clone(),
            slot_ms: slot,
            late,
            overlap: self.trigger().overlap,
            run_ms: run.as_millis() as u64,
            claimant: (id.0 >> 64) as u64 ^ id.0 as u64,
        };
        let scope = Scope::project(target.project.clone(), Duration::from_secs(5));
        let give_up = tokio::time::Instant::now() + CLAIM_PATIENCE;
        loop {
            let pause = match self.conn.call(&scope, claim.clone()).await {
                Ok(Firing::Run) => break,
                Ok(Firing::Taken | Firing::Skipped) => return,
                Ok(Firing::Wait) => WAIT_POLL,
                Err(failure) => {
                    tracing::warn!(project = %target.project, doee = %target.doee, %failure, "cannot claim a schedule's firing yet");
                    if tokio::time::Instant::now() > give_up {
                        return;
                    }
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = stopped.wait_for(|stop| *stop) => return,
            }
        }
        let (scope, invoke) = target.invoke(
            id,
            Trigger::Schedule { slot_ms: slot },
            bytes::Bytes::from(self.trigger().input.clone().into_bytes()),
            self.queue_allowance,
        );
        let conn = self.conn.clone();
        let route = self.route.clone();
        // The next firing is not held up by this one: it is claimed at its
        // moment, and Resadmin skips or queues it while this one runs.
        tokio::spawn(async move {
            let target = &route.target;
            let started = std::time::Instant::now();
            match conn.call(&scope, invoke.clone()).await {
                Ok(outcome) => {
                    if let Err(failure) = outcome.result {
                        tracing::info!(project = %target.project, doee = %target.doee, failure = %failure.message(), "scheduled invocation failed");
                    }
                }
                // A Doer records what it runs; what none ran is recorded here.
                Err(failure) => {
                    tracing::warn!(project = %target.project, doee = %target.doee, %failure, "scheduled invocation did not run");
                    let took = started.elapsed();
                    let project = target.project.clone();
                    pipeline::record_not_run(&conn, project, &invoke, &failure, took).await;
                }
            }
            let done = FiringDone {
                doee: target.doee.clone(),
                when: route.trigger.when.clone(),
                slot_ms: slot,
            };
            let scope = Scope::project(target.project.clone(), Duration::from_secs(5));
            if let Err(failure) = conn.call(&scope, done).await {
                tracing::debug!(%failure, "could not report a firing's end; it counts as ended when its time is up");
            }
        });
    }
}
