//! Chains of Doees: `ctx.invoke` through the kernel (the callee's output,
//! its failure with both invocation ids, a cycle stopped at the depth
//! bound, records linked to their parent), pipelines of three Doees over
//! HTTP and MQTT, and a chain that completes while every Worker is busy.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use isms_test_support::mqtt::{Connect, RawClient, Received};
use isms_test_support::{Options, Platform, copy_dir, eventually, fixtures};
use std::time::Duration;

/// Few Workers each, so that a dozen Doees fit in a project's quota.
const SMALL: &str = "[resources]\nconcurrency = 2\n";

/// A link of the `misbehave` fixture's `chain` mode, calling `call` if set.
fn link(p: &Platform, project: &str, name: &str, call: Option<&str>, extra: &str) {
    let params = call.map_or(String::new(), |c| format!("call = \"{c}\"\n"));
    p.deploy_misbehave_with(project, name, "chain", &params, extra);
}

#[test]
fn doees_call_doees_and_pipelines_pass_outputs_along() {
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR")).start();
    p.login_admin();
    p.run(&["project", "create", "chain"]);
    p.run(&["project", "create", "other"]);
    link(&p, "chain", "outer", Some("inner"), SMALL);
    link(&p, "chain", "inner", None, SMALL);

    // The callee's output comes back; its record names its parent.
    let r = p.trigger("/chain/outer", b"21.5");
    assert_eq!(
        (r.status, r.text()),
        (200, "outer(inner(21.5))".to_string())
    );
    let outer_id = r.header("x-isms-invocation-id").unwrap().to_string();
    let token = p.admin_token();
    let inner = eventually(Duration::from_secs(10), "the callee's record", || {
        let r = p.call_api(
            "GET",
            "/api/v1/projects/chain/invocations?limit=100",
            Some(&token),
            b"",
        );
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["doee"] == "inner")
            .cloned()
    });
    assert_eq!(inner["trigger"], "chain");
    assert_eq!(inner["trigger_detail"]["parent"], outer_id.as_str());
    assert_eq!(inner["trigger_detail"]["depth"], 1);
    assert_eq!(inner["output"], "inner(21.5)");

    // A callee's failure is the caller's, with both invocations' ids.
    link(&p, "chain", "caller", Some("broken"), SMALL);
    p.deploy_misbehave("chain", "broken", "panic", SMALL);
    let r = p.trigger("/chain/caller", b"x");
    assert_eq!(r.status, 500, "{}", r.text());
    let caller_id = r.header("x-isms-invocation-id").unwrap().to_string();
    let body = r.json();
    assert_eq!(body["invocation_id"], caller_id.as_str(), "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("`broken` failed (invocation ") && message.contains("panic"),
        "{message}"
    );
    let broken_id = message
        .split("(invocation ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    assert_ne!(broken_id, caller_id);
    assert_eq!(
        p.invocation(broken_id)["trigger_detail"]["parent"],
        caller_id.as_str()
    );

    // A cycle stops at the depth bound, cleanly.
    link(&p, "chain", "ping", Some("pong"), SMALL);
    link(&p, "chain", "pong", Some("ping"), SMALL);
    let r = p.trigger("/chain/ping", b"x");
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(
        r.text().contains("past doer.max_chain_depth (8)"),
        "{}",
        r.text()
    );
    // Only Doees of its own project: another's is not found.
    link(&p, "other", "stranger", Some("inner"), "");
    let r = p.trigger("/other/stranger", b"x");
    assert_eq!(r.status, 500);
    assert!(
        r.text().contains("project `other` has no Doee `inner`"),
        "{}",
        r.text()
    );

    // A Python Doee calls one too.
    let dir = p.root.join("py");
    copy_dir(&fixtures().join("python"), &dir);
    p.deploy(&dir, "chain");
    let r = p.trigger("/chain/py", b"invoke inner from python");
    assert_eq!(
        (r.status, r.text()),
        (200, "python got inner(from python)".to_string())
    );

    // A pipeline of three, over HTTP and over MQTT; the Doee declaring it
    // does not run.
    for stage in ["parse", "threshold", "store"] {
        link(&p, "chain", stage, None, SMALL);
    }
    p.deploy_misbehave(
        "chain",
        "entry",
        "panic",
        "[resources]\nconcurrency = 1\n\n[[triggers.http]]\nroute = \"/readings\"\nmethods = [\"POST\"]\n\
         pipeline = [\"parse\", \"threshold\", \"store\"]\n\n\
         [[triggers.mqtt]]\ntopic = \"chain/+/in\"\nreply_topic = \"chain/out\"\n\
         pipeline = [\"parse\", \"threshold\", \"store\"]\n",
    );
    let r = p.trigger("/chain/readings", b"21.5");
    assert_eq!(
        (r.status, r.text()),
        (200, "store(threshold(parse(21.5)))".to_string())
    );
    assert!(
        p.run(&["doee", "show", "chain/entry"])
            .contains("POST /readings → parse | threshold | store"),
    );
    let secret = p.create_device("chain", "meter");
    let connect = Connect {
        login: Some(("chain/meter".into(), secret)),
        ..Connect::v4("meter")
    };
    let mut device = RawClient::open(p.mqtt_port, &connect).unwrap();
    assert!(matches!(
        device.recv(Duration::from_secs(10)),
        Some(Received::ConnAck { code: 0, .. })
    ));
    device.subscribe(1, &[("chain/out", 1)]);
    let reply = eventually(Duration::from_secs(30), "the pipeline's reply", || {
        device.publish("chain/meter/in", b"7", 1, false, 7, false);
        device
            .deliveries(Duration::from_secs(2))
            .into_iter()
            .find(|(topic, _)| topic == "chain/out")
    });
    assert_eq!(reply.1, "store(threshold(parse(7)))");
    // A stage without a built version: 503 naming it.
    p.run(&["doee", "delete", "chain/threshold"]);
    let r = eventually(Duration::from_secs(10), "the route to change", || {
        let r = p.trigger("/chain/readings", b"1");
        (r.status == 503).then_some(r)
    });
    assert!(
        r.text().contains("pipeline stage `threshold`"),
        "{}",
        r.text()
    );
}

/// Two callers take both of the Doer's Workers, then call a third Doee:
/// its Worker runs in a slot the waiting callers lend, so both complete
/// (without lending, each would wait for the other's timeout).
#[test]
fn a_chain_completes_when_every_worker_is_busy() {
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR"))
        .env("ISMS_DOER_MAX_WORKERS", "2")
        .start();
    p.login_admin();
    p.run(&["project", "create", "busy"]);
    p.deploy_misbehave_with(
        "busy",
        "caller",
        "chain",
        "call = \"callee\"\nsleep_ms = \"800\"\n",
        "[resources]\ntimeout_ms = 20000\nconcurrency = 2\n",
    );
    link(
        &p,
        "busy",
        "callee",
        None,
        "[resources]\ntimeout_ms = 20000\n",
    );
    let answers: Vec<_> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..2)
            .map(|i| {
                let p = &p;
                scope.spawn(move || p.trigger("/busy/caller", format!("n{i}").as_bytes()))
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for (i, r) in answers.iter().enumerate() {
        assert_eq!(
            (r.status, r.text()),
            (200, format!("caller(callee(n{i}))")),
            "call {i}"
        );
    }

    // A Doee of one Worker calling itself, twice at once: each callee
    // gets a Worker of its own, none waits behind its own caller.
    p.deploy_misbehave_with(
        "busy",
        "count",
        "chain",
        "recurse = \"yes\"\n",
        "[resources]\ntimeout_ms = 20000\nconcurrency = 1\n",
    );
    let answers: Vec<_> = std::thread::scope(|scope| {
        let calls: Vec<_> = ["2", "3"]
            .into_iter()
            .map(|n| {
                let p = &p;
                scope.spawn(move || p.trigger("/busy/count", n.as_bytes()))
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert_eq!(
        answers
            .iter()
            .map(|r| (r.status, r.text()))
            .collect::<Vec<_>>(),
        [
            (200, "count(count(count(0)))".to_string()),
            (200, "count(count(count(count(0))))".to_string())
        ]
    );
}
