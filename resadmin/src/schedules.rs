//! Schedules' firings: which moment each schedule last fired, claimed
//! before it runs, so that one firing runs once however many CommServers
//! fire schedules; whether the last one still runs; how many were skipped.
//!
//! A schedule is named by its Doee and its timing (`When`), so a redeploy
//! that keeps a schedule keeps its history, and one that changes it starts
//! a new one. Rows go with their Doee (a foreign key).

use crate::store::{Store, StoreResult};
use crate::{State, db_failure};
use isms_ipc::names::now_ms;
use isms_ipc::resadmin::{ClaimFiring, Firing, FiringDone, Overlap, ScheduleInfo, When};
use isms_ipc::{DoeeName, Failure, ProjectName};
use sqlx::Row;
use std::collections::HashMap;

/// What Resadmin remembers of a schedule, besides the last moment
/// claimed.
pub struct ScheduleState {
    /// The last firing that ran, if any.
    pub fired_ms: Option<u64>,
    /// Firings skipped because the previous one still ran.
    pub skipped: u64,
}

/// A schedule's name in the table: its timing, as JSON.
fn timing_key(when: &When) -> String {
    serde_json::to_string(when).unwrap_or_default()
}

impl Store {
    /// Claims `claim`'s firing (see [`ClaimFiring`]). The claim is on disk
    /// before the answer (state.db otherwise syncs at checkpoints): a power
    /// cut after it cannot run the firing twice.
    pub async fn claim_firing(
        &self,
        project: &ProjectName,
        claim: &ClaimFiring,
        now: u64,
    ) -> StoreResult<Firing> {
        let mut conn = self.durable.acquire().await?;
        match claim_on(&mut conn, project, claim, now).await {
            // The Doee is gone (deleted since the CommServer loaded it).
            Err(sqlx::Error::Database(err)) if err.is_foreign_key_violation() => Ok(Firing::Taken),
            outcome => outcome,
        }
    }

    /// Forgets the schedules of `doee` that its manifest, now active, no
    /// longer has: one that comes back later (a rollback) starts afresh
    /// rather than catching up a firing from when it was not active.
    pub async fn keep_schedules(
        &self,
        project: &ProjectName,
        doee: &DoeeName,
        kept: &[When],
    ) -> StoreResult<()> {
        let kept: Vec<String> = kept.iter().map(timing_key).collect();
        let stored: Vec<String> =
            sqlx::query_scalar("SELECT timing FROM schedules WHERE project = ? AND doee = ?")
                .bind(project.as_str())
                .bind(doee.as_str())
                .fetch_all(&self.pool)
                .await?;
        for timing in stored.into_iter().filter(|t| !kept.contains(t)) {
            sqlx::query("DELETE FROM schedules WHERE project = ? AND doee = ? AND timing = ?")
                .bind(project.as_str())
                .bind(doee.as_str())
                .bind(timing)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Marks the firing claimed for `slot_ms` as ended.
    pub async fn firing_done(
        &self,
        project: &ProjectName,
        doee: &DoeeName,
        when: &When,
        slot_ms: u64,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE schedules SET running_until_ms = 0 \
             WHERE project = ? AND doee = ? AND timing = ? AND running_ms = ?",
        )
        .bind(project.as_str())
        .bind(doee.as_str())
        .bind(timing_key(when))
        .bind(slot_ms as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// What is remembered of a Doee's schedules, by timing.
    pub async fn schedule_states(
        &self,
        project: &ProjectName,
        doee: &DoeeName,
    ) -> StoreResult<HashMap<String, ScheduleState>> {
        let rows = sqlx::query(
            "SELECT timing, fired_ms, skipped FROM schedules WHERE project = ? AND doee = ?",
        )
        .bind(project.as_str())
        .bind(doee.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                (
                    row.get::<String, _>(0),
                    ScheduleState {
                        fired_ms: row.get::<Option<i64>, _>(1).map(|ms| ms as u64),
                        skipped: row.get::<i64, _>(2) as u64,
                    },
                )
            })
            .collect())
    }
}

async fn claim_on(
    conn: &mut sqlx::SqliteConnection,
    project: &ProjectName,
    claim: &ClaimFiring,
    now: u64,
) -> StoreResult<Firing> {
    let key = timing_key(&claim.when);
    // Write-locked from the start: two CommServers claiming at once must
    // not both read the row as unclaimed.
    let mut tx = sqlx::Connection::begin_with(conn, "BEGIN IMMEDIATE").await?;
    let row = sqlx::query(
        "SELECT last_ms, running_until_ms, claimant, running_ms FROM schedules \
         WHERE project = ? AND doee = ? AND timing = ?",
    )
    .bind(project.as_str())
    .bind(claim.doee.as_str())
    .bind(&key)
    .fetch_optional(&mut *tx)
    .await?;
    let running_until = now.saturating_add(claim.run_ms) as i64;
    let firing = match row {
        // A schedule never seen has missed nothing: a late firing only
        // marks where it starts.
        None => {
            let (firing, fired, until) = if claim.late {
                (Firing::Taken, None, 0)
            } else {
                (Firing::Run, Some(claim.slot_ms as i64), running_until)
            };
            sqlx::query(
                "INSERT INTO schedules (project, doee, timing, last_ms, claimant, fired_ms, running_ms, running_until_ms) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(project.as_str())
            .bind(claim.doee.as_str())
            .bind(&key)
            .bind(claim.slot_ms as i64)
            .bind(claim.claimant as i64)
            .bind(fired)
            .bind(claim.slot_ms as i64)
            .bind(until)
            .execute(&mut *tx)
            .await?;
            firing
        }
        Some(row) => {
            let last = row.get::<i64, _>(0) as u64;
            let busy = row.get::<i64, _>(1) as u64 > now;
            // The same claimant asking again (its answer was lost) has it.
            let again = row.get::<i64, _>(2) as u64 == claim.claimant
                && row.get::<i64, _>(3) as u64 == claim.slot_ms
                && claim.slot_ms == last;
            match (claim.slot_ms <= last, busy, claim.overlap) {
                (true, _, _) if again => Firing::Run,
                (true, _, _) => Firing::Taken,
                (false, true, Overlap::Queue) => Firing::Wait,
                (false, true, Overlap::Skip) => {
                    sqlx::query(
                        "UPDATE schedules SET last_ms = ?, skipped = skipped + 1 \
                         WHERE project = ? AND doee = ? AND timing = ?",
                    )
                    .bind(claim.slot_ms as i64)
                    .bind(project.as_str())
                    .bind(claim.doee.as_str())
                    .bind(&key)
                    .execute(&mut *tx)
                    .await?;
                    Firing::Skipped
                }
                (false, false, _) => {
                    sqlx::query(
                        "UPDATE schedules SET last_ms = ?1, fired_ms = ?1, running_ms = ?1, running_until_ms = ?2, \
                         claimant = ?6 WHERE project = ?3 AND doee = ?4 AND timing = ?5",
                    )
                    .bind(claim.slot_ms as i64)
                    .bind(running_until)
                    .bind(project.as_str())
                    .bind(claim.doee.as_str())
                    .bind(&key)
                    .bind(claim.claimant as i64)
                    .execute(&mut *tx)
                    .await?;
                    Firing::Run
                }
            }
        }
    };
    tx.commit().await?;
    Ok(firing)
}

impl State {
    pub(crate) async fn claim_firing(
        &self,
        project: &ProjectName,
        claim: ClaimFiring,
    ) -> Result<Firing, Failure> {
        let firing = self
            .store
            .claim_firing(project, &claim, now_ms())
            .await
            .map_err(db_failure)?;
        if firing == Firing::Skipped {
            tracing::info!(%project, doee = %claim.doee, schedule = %claim.when, "schedule firing skipped: the previous one still runs");
        }
        Ok(firing)
    }

    pub(crate) async fn firing_done(
        &self,
        project: &ProjectName,
        done: FiringDone,
    ) -> Result<(), Failure> {
        self.store
            .firing_done(project, &done.doee, &done.when, done.slot_ms)
            .await
            .map_err(db_failure)
    }
}

/// How `isms doee show` lists a Doee's schedules: with their next firing
/// after `now`, their last, and the firings skipped.
pub fn describe(
    schedules: Vec<isms_ipc::resadmin::ScheduleTrigger>,
    states: &HashMap<String, ScheduleState>,
    now: u64,
) -> Vec<ScheduleInfo> {
    schedules
        .into_iter()
        .map(|trigger| {
            let state = states.get(&timing_key(&trigger.when));
            let next_ms = isms_schedule::Clock::new(&trigger.when)
                .ok()
                .and_then(|clock| clock.next_after(now));
            ScheduleInfo {
                next_ms,
                last_ms: state.and_then(|s| s.fired_ms),
                skipped: state.map_or(0, |s| s.skipped),
                trigger,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store_with_doee(name: &str) -> (Store, ProjectName, DoeeName) {
        let dir =
            std::env::temp_dir().join(format!("isms-schedules-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir).await.unwrap();
        let project = ProjectName::new("demo").unwrap();
        let doee = DoeeName::new("tick").unwrap();
        sqlx::query("INSERT INTO projects (name, created_ms) VALUES ('demo', 0)")
            .execute(&store.pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO doees (project, name, created_ms) VALUES ('demo', 'tick', 0)")
            .execute(&store.pool)
            .await
            .unwrap();
        (store, project, doee)
    }

    fn claim(slot_ms: u64, late: bool, overlap: Overlap) -> ClaimFiring {
        ClaimFiring {
            doee: DoeeName::new("tick").unwrap(),
            when: When::Every { ms: 1000 },
            slot_ms,
            late,
            overlap,
            run_ms: 5000,
            claimant: 1,
        }
    }

    /// `store`'s answer to `claim` at `now`.
    async fn answer(store: &Store, project: &ProjectName, claim: ClaimFiring, now: u64) -> Firing {
        store.claim_firing(project, &claim, now).await.unwrap()
    }

    /// A claim from another CommServer, or another attempt.
    fn by(claimant: u64, claim: ClaimFiring) -> ClaimFiring {
        ClaimFiring { claimant, ..claim }
    }

    #[tokio::test]
    async fn a_firing_is_claimed_once() {
        let (store, project, _) = store_with_doee("once").await;
        let first = claim(1000, false, Overlap::Skip);
        assert_eq!(
            answer(&store, &project, first.clone(), 1000).await,
            Firing::Run
        );
        assert_eq!(
            answer(&store, &project, by(2, first.clone()), 1001).await,
            Firing::Taken,
            "a second CommServer asking for the same moment"
        );
        assert_eq!(
            answer(&store, &project, first.clone(), 1002).await,
            Firing::Run,
            "the first asking again, its answer lost"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn of_claims_at_once_one_runs() {
        let (store, project, _) = store_with_doee("race").await;
        let claims = (0..8).map(|claimant| {
            let (store, project) = (store.clone(), project.clone());
            tokio::spawn(async move {
                let claim = by(claimant + 10, claim(1000, false, Overlap::Skip));
                store.claim_firing(&project, &claim, 1000).await.unwrap()
            })
        });
        let mut runs = 0;
        for claim in claims.collect::<Vec<_>>() {
            runs += usize::from(claim.await.unwrap() == Firing::Run);
        }
        assert_eq!(runs, 1);
    }

    #[tokio::test]
    async fn a_firing_while_the_last_runs_is_skipped_or_waits() {
        let (store, project, doee) = store_with_doee("overlap").await;
        let when = When::Every { ms: 1000 };
        answer(&store, &project, claim(1000, false, Overlap::Skip), 1000).await;
        assert_eq!(
            answer(&store, &project, claim(2000, false, Overlap::Queue), 2000).await,
            Firing::Wait
        );
        assert_eq!(
            answer(&store, &project, claim(2000, false, Overlap::Skip), 2000).await,
            Firing::Skipped
        );
        store
            .firing_done(&project, &doee, &when, 1000)
            .await
            .unwrap();
        let states = store.schedule_states(&project, &doee).await.unwrap();
        let state = &states[&timing_key(&when)];
        assert_eq!((state.fired_ms, state.skipped), (Some(1000), 1));
        // The skipped firing's moment is not a running one: the next runs.
        assert_eq!(
            answer(&store, &project, claim(3000, false, Overlap::Skip), 3000).await,
            Firing::Run
        );
        // A firing nobody reports ended stops counting once its time is up.
        assert_eq!(
            answer(&store, &project, claim(9000, false, Overlap::Skip), 8001).await,
            Firing::Run
        );
    }

    #[tokio::test]
    async fn only_a_schedule_that_fired_before_catches_up() {
        let (store, project, doee) = store_with_doee("late").await;
        let when = When::Every { ms: 1000 };
        assert_eq!(
            answer(&store, &project, claim(5000, true, Overlap::Skip), 5500).await,
            Firing::Taken,
            "a new schedule missed nothing"
        );
        let states = store.schedule_states(&project, &doee).await.unwrap();
        assert_eq!(
            states[&timing_key(&when)].fired_ms,
            None,
            "and has not fired"
        );
        assert_eq!(
            answer(&store, &project, claim(9000, true, Overlap::Skip), 9500).await,
            Firing::Run,
            "one that has fired runs the last it missed"
        );
        store
            .firing_done(&project, &doee, &when, 9000)
            .await
            .unwrap();
        assert_eq!(
            answer(
                &store,
                &project,
                by(2, claim(9000, true, Overlap::Skip)),
                9600
            )
            .await,
            Firing::Taken,
            "once"
        );
    }

    #[tokio::test]
    async fn a_schedule_no_longer_active_is_forgotten() {
        let (store, project, doee) = store_with_doee("forget").await;
        answer(&store, &project, claim(1000, false, Overlap::Skip), 1000).await;
        store
            .keep_schedules(&project, &doee, &[When::Every { ms: 1000 }])
            .await
            .unwrap();
        assert_eq!(
            store.schedule_states(&project, &doee).await.unwrap().len(),
            1
        );
        store
            .keep_schedules(&project, &doee, &[When::Every { ms: 2000 }])
            .await
            .unwrap();
        assert!(
            store
                .schedule_states(&project, &doee)
                .await
                .unwrap()
                .is_empty()
        );
        // Back again, it is new: it missed nothing.
        assert_eq!(
            answer(&store, &project, claim(9000, true, Overlap::Skip), 9500).await,
            Firing::Taken
        );
        // And a claim for a Doee deleted since is simply not to run.
        let gone = ClaimFiring {
            doee: DoeeName::new("gone").unwrap(),
            ..claim(1000, false, Overlap::Skip)
        };
        assert_eq!(answer(&store, &project, gone, 1000).await, Firing::Taken);
    }

    #[tokio::test]
    async fn schedules_go_with_their_doee() {
        let (store, project, doee) = store_with_doee("cascade").await;
        answer(&store, &project, claim(1000, false, Overlap::Skip), 1000).await;
        sqlx::query("DELETE FROM doees")
            .execute(&store.pool)
            .await
            .unwrap();
        assert!(
            store
                .schedule_states(&project, &doee)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
