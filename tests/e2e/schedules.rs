//! Schedule triggers: firings at their moments, once each, recorded with
//! trigger `schedule`; the last missed one run once after a power cut;
//! overlapping firings skipped and counted; bad timings refused at deploy.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use isms_test_support::{Options, Platform, eventually};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A schedule's firings so far, by moment: (started_ms, duration_ms).
fn firings(p: &Platform, project: &str, doee: &str) -> BTreeMap<u64, Vec<(u64, f64)>> {
    let token = p.admin_token();
    let r = p.call_api(
        "GET",
        &format!("/api/v1/projects/{project}/invocations?limit=1000"),
        Some(&token),
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let mut by_moment: BTreeMap<u64, Vec<(u64, f64)>> = BTreeMap::new();
    for record in r.json().as_array().unwrap() {
        if record["doee"] != doee || record["trigger"] != "schedule" {
            continue;
        }
        let moment = record["trigger_detail"]["scheduled_ms"].as_u64().unwrap();
        if record["status"] == "succeeded" {
            // The Doee saw the same moment as the record.
            assert_eq!(
                record["output"].as_str().unwrap(),
                format!("schedule {moment}")
            );
        }
        by_moment.entry(moment).or_default().push((
            record["started_ms"].as_u64().unwrap(),
            record["duration_ms"].as_f64().unwrap(),
        ));
    }
    by_moment
}

/// Waits until `doee` has fired at `moment` or later; its firings then.
fn fired_by(
    p: &Platform,
    project: &str,
    doee: &str,
    moment: u64,
) -> BTreeMap<u64, Vec<(u64, f64)>> {
    eventually(
        Duration::from_secs(30),
        &format!("{doee} to fire at {moment} or later"),
        || {
            let fired = firings(p, project, doee);
            fired.range(moment..).next().is_some().then_some(fired)
        },
    )
}

fn schedule_of(p: &Platform, project: &str, doee: &str) -> serde_json::Value {
    let token = p.admin_token();
    let r = p.call_api(
        "GET",
        &format!("/api/v1/projects/{project}/doees/{doee}"),
        Some(&token),
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["triggers"]["schedule"][0].clone()
}

fn assert_once_each(fired: &BTreeMap<u64, Vec<(u64, f64)>>) {
    for (moment, runs) in fired {
        assert_eq!(
            runs.len(),
            1,
            "the firing at {moment} ran {} times",
            runs.len()
        );
    }
}

#[test]
fn schedules_fire_at_their_moments_once_and_catch_up_once() {
    let mut p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR")).start();
    p.login_admin();
    p.run(&["project", "create", "clock"]);
    // Two alike but for catch_up, to tell apart what a restart runs.
    p.deploy_misbehave(
        "clock",
        "last",
        "scheduled",
        "[[triggers.schedule]]\nevery = \"3s\"\n",
    );
    p.deploy_misbehave(
        "clock",
        "none",
        "scheduled",
        "[[triggers.schedule]]\nevery = \"3s\"\ncatch_up = \"none\"\n",
    );
    p.deploy_misbehave(
        "clock",
        "cron",
        "scheduled",
        "[[triggers.schedule]]\ncron = \"0 0 1 1 *\"\ntimezone = \"Europe/Berlin\"\n",
    );

    // About once a second, each moment once. Deployed last, so that its
    // first seconds are not the other builds'; a slow first start queues
    // the next firing rather than skipping it.
    p.deploy_misbehave(
        "clock",
        "tick",
        "scheduled",
        "[[triggers.schedule]]\nevery = \"1s\"\noverlap = \"queue\"\n",
    );
    let first = *fired_by(&p, "clock", "tick", 0).keys().next().unwrap();
    let fired = fired_by(&p, "clock", "tick", first + 4000);
    assert_once_each(&fired);
    let moments: Vec<u64> = fired.keys().copied().collect();
    assert!(moments.iter().all(|m| m % 1000 == 0), "{moments:?}");
    let within = moments.iter().filter(|&&m| m <= first + 4000).count();
    assert!(
        (4..=5).contains(&within),
        "5 moments from {first} to 4 s later, one of them lost at most to the machine's noise; \
         fired {moments:?}"
    );

    // The next firings are shown: midnight of New Year in Berlin is
    // 23:00 UTC the day before.
    let shown = p.run(&["doee", "show", "clock/cron"]);
    assert!(
        shown.contains("schedule cron \"0 0 1 1 *\" (Europe/Berlin): next ")
            && shown.contains("-12-31 23:00:00"),
        "{shown}"
    );
    let tick = schedule_of(&p, "clock", "tick");
    let next = tick["next_ms"].as_u64().unwrap();
    assert_eq!(next % 1000, 0, "{tick}");
    assert_eq!(tick["description"], "every 1s");
    assert!(p.run(&["doee", "list", "clock"]).contains("every 3s"));

    // A power cut, and three or more moments missed: `last` runs the last
    // missed one, once; `none` runs none. Both start again at the same
    // moment, so `last` has exactly one firing before `none`'s first.
    fired_by(&p, "clock", "last", 0);
    fired_by(&p, "clock", "none", 0);
    let cut = now_ms();
    p.crash_and_restart_after(Duration::from_secs(10));
    // Moments after the cut were missed: nothing ran them before it.
    let none = fired_by(&p, "clock", "none", cut + 1);
    let after_none = *none.range(cut + 1..).next().unwrap().0;
    let last = fired_by(&p, "clock", "last", after_none);
    assert_once_each(&last);
    let caught_up: Vec<u64> = last.range(cut + 1..after_none).map(|(m, _)| *m).collect();
    assert_eq!(
        caught_up,
        [after_none - 3000],
        "down from {cut}; `none` came back at {after_none}"
    );
    assert!(
        after_none - 3000 > cut + 3000,
        "a moment between the cut and the caught-up one did not run: {cut}, {after_none}"
    );
    assert_once_each(&fired_by(&p, "clock", "tick", 0));
}

#[test]
fn an_overlapping_firing_is_skipped_and_counted() {
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR")).start();
    p.login_admin();
    p.run(&["project", "create", "slow"]);
    p.deploy_misbehave(
        "slow",
        "slow",
        "scheduled",
        "[resources]\ntimeout_ms = 5000\n\n[[triggers.schedule]]\nevery = \"1s\"\ninput = \"sleep:2500\"\n",
    );
    let first = *fired_by(&p, "slow", "slow", 0).keys().next().unwrap();
    let fired = fired_by(&p, "slow", "slow", first + 5000);
    assert_once_each(&fired);
    // Never two at once: each starts after the one before ended.
    let runs: Vec<(u64, f64)> = fired.values().map(|runs| runs[0]).collect();
    for pair in runs.windows(2) {
        let (started, took) = pair[0];
        assert!(
            pair[1].0 as f64 >= started as f64 + took,
            "overlapping runs: {runs:?}"
        );
    }
    let schedule = schedule_of(&p, "slow", "slow");
    assert!(
        schedule["skipped"].as_u64().unwrap() >= 2,
        "a 2.5 s run skips the firings of the next 2 s: {schedule}"
    );
    let shown = p.run(&["doee", "show", "slow/slow"]);
    assert!(shown.contains("schedule every 1s: next"), "{shown}");
}

#[test]
fn a_bad_timing_is_refused_at_deploy_naming_the_field() {
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR")).start();
    p.login_admin();
    p.run(&["project", "create", "bad"]);
    for (schedule, field) in [
        (
            "cron = \"*/5 * * *\"",
            "`triggers.schedule[0].cron` \"*/5 * * *\"",
        ),
        (
            "cron = \"0 7 * * *\"\ntimezone = \"Mars/Olympus\"",
            "`triggers.schedule[0].timezone`",
        ),
        ("every = \"now and then\"", "`triggers.schedule[0].every`"),
    ] {
        let dir = p.root.join("bad");
        isms_test_support::copy_dir(&isms_test_support::fixtures().join("misbehave"), &dir);
        std::fs::write(
            dir.join("doee.toml"),
            format!("name = \"bad\"\nlanguage = \"rust\"\n\n[[triggers.schedule]]\n{schedule}\n"),
        )
        .unwrap();
        let refused = p.deploy_refused(&dir, "bad");
        assert!(refused.contains(field), "{field} in {refused}");
    }
}
