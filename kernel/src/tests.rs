//! The kernel's routing rules, driven without sockets, on a fake clock.

use super::*;
use isms_ipc::doer::{Invoke, Trigger};
use isms_ipc::{Call, Deadline, DoeeName, InvocationId, ProjectName, Registration};
use std::cell::Cell;

const COMM: &[u8] = b"comm";
const DOER: &[u8] = b"doer-a";

thread_local! {
    /// The test's clock: each test runs on its own thread, reads the real
    /// clocks once and from then on moves only by [`advance`].
    static CLOCK: Cell<Option<Now>> = const { Cell::new(None) };
}

/// What time it is for the kernel under test.
fn now() -> Now {
    CLOCK.with(|clock| {
        let now = clock.get().unwrap_or_else(Now::read);
        clock.set(Some(now));
        now
    })
}

/// Lets `by` pass, without sleeping.
fn advance(by: Duration) {
    let later = now() + by;
    CLOCK.with(|clock| clock.set(Some(later)));
}

fn kernel() -> Kernel {
    Kernel::new(
        QueueLimits {
            total: 3,
            per_project: 2,
        },
        Duration::from_secs(2),
        now(),
    )
}

fn peer(id: &'static [u8]) -> Bytes {
    Bytes::from_static(id)
}

fn send(k: &mut Kernel, from: &'static [u8], message: Message) {
    let frames = message.encode().unwrap();
    k.on_message(peer(from), &frames, now());
}

/// Registers and returns what the kernel sent besides `Registered` (a
/// registration may dispatch waiting work at once).
fn register(
    k: &mut Kernel,
    from: &'static [u8],
    service: ServiceKind,
    name: &str,
    capacity: u32,
) -> Vec<(Bytes, Body, Envelope)> {
    send(
        k,
        from,
        Message {
            envelope: envelope(0, ServiceKind::Kernel, None, 60_000),
            body: Body::Control(Control::Register(Registration {
                service,
                instance: name.into(),
                pid: 1,
                capacity,
                host: "gw1".into(),
                labels: Vec::new(),
            })),
        },
    );
    let mut out = sent(k);
    assert!(
        matches!(out.first(), Some((to, Body::Control(Control::Registered), _)) if to == from),
        "{out:?}"
    );
    out.remove(0);
    out
}

fn envelope(id: u64, origin: ServiceKind, project: Option<&str>, timeout_ms: u64) -> Envelope {
    Envelope {
        id: MessageId(id),
        origin,
        project: project.map(|p| ProjectName::new(p).unwrap()),
        priority: Priority::Normal,
        deadline: Deadline(now().epoch_ms + timeout_ms),
        placement: Vec::new(),
    }
}

fn invoke_request() -> Request {
    Invoke {
        id: InvocationId(1),
        doee: DoeeName::new("hello").unwrap(),
        version: 1,
        trigger: Trigger::Cli,
        input: Bytes::from_static(b"x"),
        stream: false,
    }
    .into_request()
}

fn invoke(k: &mut Kernel, id: u64, project: &str, timeout_ms: u64) {
    send(
        k,
        COMM,
        Message {
            // A service cannot pose as another: the kernel fixes `origin`.
            envelope: envelope(id, ServiceKind::Doer, Some(project), timeout_ms),
            body: Body::Request(invoke_request()),
        },
    );
}

/// Everything the kernel sent: (to, body, envelope).
fn sent(k: &mut Kernel) -> Vec<(Bytes, Body, Envelope)> {
    let out: Vec<Outgoing> = k.drain_outbox().collect();
    out.into_iter()
        .map(|(to, frames)| {
            let message = Message::decode(&frames).unwrap();
            (to, message.body, message.envelope)
        })
        .collect()
}

fn reply_from_doer(k: &mut Kernel, process_id: MessageId) {
    send(
        k,
        DOER,
        Message {
            envelope: envelope(process_id.0, ServiceKind::Doer, None, 0),
            body: Body::Reply(Err(Failure::invalid("any answer will do"))),
        },
    );
}

fn setup() -> Kernel {
    let mut k = kernel();
    register(&mut k, COMM, ServiceKind::CommServer, "commserver-1", 8);
    register(&mut k, DOER, ServiceKind::Doer, "doer-1", 1);
    k
}

#[test]
fn a_request_goes_to_its_target_and_the_reply_back_to_its_origin() {
    let mut k = setup();
    invoke(&mut k, 7, "demo", 5_000);
    let out = sent(&mut k);
    assert_eq!(out.len(), 1);
    let (to, body, env) = &out[0];
    assert_eq!(to, &peer(DOER));
    assert!(matches!(body, Body::Request(Request::Doer(_))));
    assert_eq!(
        env.origin,
        ServiceKind::CommServer,
        "origin set by the kernel"
    );
    assert_eq!(env.project.as_ref().map(|p| p.as_str()), Some("demo"));

    reply_from_doer(&mut k, env.id);
    let out = sent(&mut k);
    assert_eq!(out.len(), 1);
    let (to, body, env) = &out[0];
    assert_eq!(to, &peer(COMM));
    assert_eq!(env.id, MessageId(7), "the origin's own id comes back");
    assert_eq!(env.origin, ServiceKind::Doer);
    assert!(matches!(body, Body::Reply(Err(f)) if f.message == "any answer will do"));
}

#[test]
fn dispatch_waits_for_free_capacity() {
    let mut k = setup();
    invoke(&mut k, 1, "demo", 5_000);
    invoke(&mut k, 2, "demo", 5_000);
    let out = sent(&mut k);
    assert_eq!(out.len(), 1, "capacity 1: the second request waits");
    reply_from_doer(&mut k, out[0].2.id);
    let out = sent(&mut k);
    assert_eq!(out.len(), 2, "the reply, then the waiting request");
    assert_eq!(out[0].0, peer(COMM));
    assert_eq!(out[1].0, peer(DOER));
}

#[test]
fn a_full_queue_answers_busy_at_once() {
    let mut k = setup();
    for id in 1..=3 {
        invoke(&mut k, id, "demo", 5_000);
    }
    // One dispatched; two queued, which is the project's limit.
    let out = sent(&mut k);
    assert!(
        matches!(&out[..], [(to, Body::Request(_), _)] if to == &peer(DOER)),
        "{out:?}"
    );
    invoke(&mut k, 4, "demo", 5_000);
    let out = sent(&mut k);
    assert!(matches!(&out[..], [(to, Body::Reply(Err(f)), env)]
        if to == &peer(COMM) && f.kind == FailureKind::Busy && env.id == MessageId(4)));
    // Another project still gets a place: its first request goes through
    // (it has none in flight), its second waits, up to the total.
    invoke(&mut k, 5, "other", 5_000);
    assert!(matches!(&sent(&mut k)[..], [(to, Body::Request(_), _)] if to == &peer(DOER)));
    invoke(&mut k, 6, "other", 5_000);
    assert!(sent(&mut k).is_empty(), "queued");
    invoke(&mut k, 7, "other", 5_000);
    assert!(
        matches!(&sent(&mut k)[..], [(_, Body::Reply(Err(f)), _)] if f.kind == FailureKind::Busy)
    );
}

/// A full Doer still takes the first request of a project with nothing in
/// flight there, so the Doer can share its Workers with it; the project's
/// next request waits like everyone's.
#[test]
fn a_full_service_still_takes_a_newcomers_first_request() {
    let mut k = setup();
    invoke(&mut k, 1, "flood", 60_000);
    invoke(&mut k, 2, "flood", 60_000);
    let out = sent(&mut k);
    assert_eq!(out.len(), 1, "capacity 1: flood's second waits");
    invoke(&mut k, 3, "light", 60_000);
    let out = sent(&mut k);
    assert!(
        matches!(&out[..], [(to, Body::Request(_), env)] if to == &peer(DOER) && env.project.as_ref().map(|p| p.as_str()) == Some("light")),
        "{out:?}"
    );
    invoke(&mut k, 4, "light", 60_000);
    assert!(sent(&mut k).is_empty(), "light has one in flight now");
    // When the Doer dies, what it held is answered and no longer in flight:
    // light is a newcomer again at the next Doer.
    k.on_disconnect(&peer(DOER), now());
    assert_eq!(sent(&mut k).len(), 2);
    let out = register(&mut k, DOER, ServiceKind::Doer, "doer-1", 1);
    assert_eq!(out.len(), 2, "one of each project: {out:?}");
}

/// A Doee's call of another goes at once to its caller's Doer, full or
/// not: the caller's Worker waits for it, so behind the queue it could
/// wait for ever.
#[test]
fn a_chained_call_goes_to_its_callers_doer_at_once() {
    let mut k = setup();
    register(&mut k, b"doer-b", ServiceKind::Doer, "doer-2", 1);
    invoke(&mut k, 1, "demo", 60_000);
    invoke(&mut k, 2, "demo", 60_000);
    let out = sent(&mut k);
    assert_eq!(out.len(), 2, "one on each Doer: {out:?}");
    let caller = out[0].0.clone();
    invoke(&mut k, 3, "demo", 60_000);
    assert!(sent(&mut k).is_empty(), "both Doers are full: it waits");
    send(
        &mut k,
        if caller == peer(DOER) {
            DOER
        } else {
            b"doer-b"
        },
        Message {
            envelope: envelope(9, ServiceKind::Doer, Some("demo"), 60_000),
            body: Body::Request(invoke_request()),
        },
    );
    let out = sent(&mut k);
    assert!(
        matches!(&out[..], [(to, Body::Request(_), _)] if *to == caller),
        "the chained call went to its caller's Doer: {out:?}"
    );
}

/// Pieces of an answer go to the origin under its id; its pulls go to the
/// instance under the kernel's; a request given up while queued is gone.
#[test]
fn streamed_pieces_and_pulls_are_relayed_and_a_queued_cancel_drops_the_request() {
    let mut k = setup();
    invoke(&mut k, 1, "demo", 60_000);
    let dispatched = sent(&mut k);
    let kernel_id = dispatched[0].2.id;
    let data = bytes::Bytes::from_static(b"25%");
    control_from(
        &mut k,
        DOER,
        Control::Chunk {
            id: kernel_id,
            data: data.clone(),
        },
    );
    let out = sent(&mut k);
    assert!(
        matches!(&out[..], [(to, Body::Control(Control::Chunk { id, data: d }), _)]
            if to == &peer(COMM) && *id == MessageId(1) && *d == data),
        "{out:?}"
    );
    // Another instance cannot speak for it.
    control_from(
        &mut k,
        COMM,
        Control::Chunk {
            id: kernel_id,
            data: data.clone(),
        },
    );
    assert!(sent(&mut k).is_empty());
    control_from(&mut k, COMM, Control::Pull(MessageId(1)));
    let out = sent(&mut k);
    assert!(
        matches!(&out[..], [(to, Body::Control(Control::Pull(id)), _)] if to == &peer(DOER) && *id == kernel_id),
        "{out:?}"
    );
    // Queued behind it (capacity 1), then given up: never dispatched.
    invoke(&mut k, 2, "demo", 60_000);
    assert!(sent(&mut k).is_empty());
    control_from(&mut k, COMM, Control::Cancel(MessageId(2)));
    reply_from_doer(&mut k, kernel_id);
    let out = sent(&mut k);
    assert!(
        matches!(&out[..], [(to, Body::Reply(_), _)] if to == &peer(COMM)),
        "only the first's reply: {out:?}"
    );
}

#[test]
fn the_origin_is_answered_when_the_deadline_passes() {
    let mut k = setup();
    // Within the instances' heartbeat timeout, so only deadlines pass.
    invoke(&mut k, 1, "demo", 1_000); // dispatched, then times out
    invoke(&mut k, 2, "demo", 1_000); // still queued, times out
    let dispatched = sent(&mut k);
    assert_eq!(dispatched.len(), 1);
    advance(Duration::from_millis(999));
    k.on_tick(now());
    let early = sent(&mut k);
    assert!(early.is_empty(), "not yet: {early:?}");
    assert_eq!(k.next_tick(now()), now().instant + Duration::from_millis(1));
    advance(Duration::from_millis(1));
    k.on_tick(now());
    let out = sent(&mut k);
    let mut ids: Vec<_> = out
        .iter()
        .map(|(to, body, env)| {
            assert_eq!(to, &peer(COMM));
            assert!(
                matches!(body, Body::Reply(Err(f)) if f.kind == FailureKind::Timeout),
                "{body:?}"
            );
            env.id.0
        })
        .collect();
    ids.sort();
    assert_eq!(ids, vec![1, 2]);

    // The Doer's late reply is not forwarded, but frees its capacity.
    reply_from_doer(&mut k, dispatched[0].2.id);
    assert!(sent(&mut k).is_empty());
    invoke(&mut k, 3, "demo", 5_000);
    assert_eq!(sent(&mut k)[0].0, peer(DOER));
}

/// An instance that stops sending heartbeats is given up on at the first
/// check past its timeout, and the requests it held are answered.
#[test]
fn a_silent_instance_fails_what_it_holds() {
    let mut k = setup();
    invoke(&mut k, 1, "demo", 60_000);
    assert_eq!(sent(&mut k).len(), 1);
    advance(Duration::from_millis(1_900));
    k.on_tick(now());
    assert!(sent(&mut k).is_empty(), "within its heartbeat timeout");
    advance(Duration::from_millis(400));
    k.on_tick(now());
    let out = sent(&mut k);
    assert!(
        matches!(&out[..], [(to, Body::Reply(Err(f)), env)]
            if to == &peer(COMM) && f.kind == FailureKind::Unavailable && env.id == MessageId(1)),
        "{out:?}"
    );
}

#[test]
fn requests_for_a_service_that_is_not_running_answer_unavailable() {
    let mut k = kernel();
    register(&mut k, COMM, ServiceKind::CommServer, "commserver-1", 8);
    invoke(&mut k, 1, "demo", 1_000);
    assert!(
        sent(&mut k).is_empty(),
        "queued until a Doer appears or the deadline"
    );
    advance(Duration::from_secs(1));
    k.on_tick(now());
    assert!(
        matches!(&sent(&mut k)[..], [(_, Body::Reply(Err(f)), _)] if f.kind == FailureKind::Unavailable)
    );
}

#[test]
fn a_dead_target_fails_its_requests_and_its_restart_is_counted() {
    let mut k = setup();
    invoke(&mut k, 1, "demo", 60_000);
    invoke(&mut k, 2, "demo", 60_000);
    assert_eq!(sent(&mut k).len(), 1);
    k.on_disconnect(&peer(DOER), now());
    let out = sent(&mut k);
    assert!(matches!(&out[..], [(to, Body::Reply(Err(f)), env)]
        if to == &peer(COMM) && f.kind == FailureKind::Unavailable && env.id == MessageId(1)));

    // The supervisor restarts it: the waiting request goes to the new one.
    let out = register(&mut k, b"doer-b", ServiceKind::Doer, "doer-1", 1);
    assert!(matches!(&out[..], [(to, Body::Request(_), _)] if to == &peer(b"doer-b")));
    let doer = k
        .statuses(now())
        .into_iter()
        .find(|s| s.instance == "doer-1")
        .unwrap();
    assert_eq!(doer.restarts, 1);
    assert_eq!(doer.state, kernel_protocol::InstanceState::Up);
}

#[test]
fn an_unknown_connection_is_asked_to_register() {
    let mut k = kernel();
    invoke(&mut k, 1, "demo", 5_000);
    assert!(matches!(
        &sent(&mut k)[..],
        [(_, Body::Control(Control::Reregister), _)]
    ));
}

#[test]
fn malformed_frames_are_dropped() {
    let mut k = setup();
    k.on_message(peer(COMM), &[Bytes::from_static(b"\x01garbage")], now());
    k.on_message(
        peer(COMM),
        &[Bytes::from_static(b"\x01\xff\xff"), Bytes::new()],
        now(),
    );
    k.on_message(peer(COMM), &[], now());
    assert!(sent(&mut k).is_empty());
    // Still serving.
    invoke(&mut k, 1, "demo", 5_000);
    assert_eq!(sent(&mut k).len(), 1);
}

#[test]
fn the_kernel_answers_the_services_query_itself() {
    const GATE: &[u8] = b"gate";
    let mut k = setup();
    register(&mut k, GATE, ServiceKind::ControlGate, "control-gate-1", 8);
    send(
        &mut k,
        GATE,
        Message {
            envelope: envelope(9, ServiceKind::ControlGate, None, 5_000),
            body: Body::Request(kernel_protocol::Services {}.into_request()),
        },
    );
    let out = sent(&mut k);
    let [(_, Body::Reply(Ok(Reply::Kernel(kernel_protocol::Reply::Services(list)))), env)] =
        &out[..]
    else {
        panic!("{out:?}");
    };
    assert_eq!(env.id, MessageId(9));
    let names: Vec<_> = list.iter().map(|s| s.instance.as_str()).collect();
    assert_eq!(
        names,
        vec!["kernel", "doer-1", "commserver-1", "control-gate-1"]
    );
}

#[test]
fn events_reach_every_other_instance() {
    let mut k = setup();
    register(&mut k, b"resadmin", ServiceKind::Resadmin, "resadmin-1", 8);
    let event = |k: &mut Kernel, from: &'static [u8]| {
        send(
            k,
            from,
            Message {
                envelope: envelope(0, ServiceKind::Resadmin, None, 5_000),
                body: Body::Event(isms_ipc::Event::DeploymentsChanged {
                    project: ProjectName::new("demo").unwrap(),
                }),
            },
        );
        let mut to: Vec<Bytes> = sent(k).into_iter().map(|(to, _, _)| to).collect();
        to.sort();
        to
    };
    assert_eq!(event(&mut k, b"resadmin"), vec![peer(COMM), peer(DOER)]);
    // Only Resadmin sends events: anyone else's is dropped.
    assert!(event(&mut k, DOER).is_empty());
    assert!(event(&mut k, COMM).is_empty());
}

/// Traffic must not postpone the check for silent instances: the next tick
/// stays at or before the absolute check time however often it is asked.
#[test]
fn messages_do_not_postpone_the_heartbeat_check() {
    let mut k = setup();
    let first = k.next_tick(now());
    for _ in 0..5 {
        advance(Duration::from_millis(60));
        send(
            &mut k,
            DOER,
            Message {
                envelope: envelope(0, ServiceKind::Doer, None, 0),
                body: Body::Control(Control::Heartbeat(Default::default())),
            },
        );
        assert!(k.next_tick(now()) <= first, "the check was postponed");
    }
}

#[test]
fn a_request_for_dbriver_must_act_for_a_project() {
    const DB: &[u8] = b"dbriver-a";
    let mut k = setup();
    register(&mut k, DB, ServiceKind::DBriver, "dbriver-1", 8);
    let sql = |project| Message {
        envelope: envelope(3, ServiceKind::Doer, project, 5_000),
        body: Body::Request(
            isms_ipc::dbriver::Sql {
                query: "SELECT 1".into(),
                params: String::new(),
            }
            .into_request(),
        ),
    };
    send(&mut k, DOER, sql(None));
    let out = sent(&mut k);
    assert_eq!(out.len(), 1, "{out:?}");
    let (to, body, _) = &out[0];
    assert_eq!(to, &peer(DOER), "refused back to the sender, not delivered");
    assert!(
        matches!(body, Body::Reply(Err(f)) if f.kind == FailureKind::Invalid && f.message.contains("project")),
        "{body:?}"
    );
    send(&mut k, DOER, sql(Some("demo")));
    let out = sent(&mut k);
    assert!(
        matches!(&out[..], [(to, Body::Request(Request::DBriver(_)), _)] if to == &peer(DB)),
        "{out:?}"
    );
}

/// Who may ask what, as the protocol declares it, for every request of
/// every service and every kind of sender: the kernel delivers exactly the
/// permitted ones and answers the rest `Forbidden` without delivering them.
#[test]
fn the_kernel_lets_through_exactly_the_declared_senders() {
    let mut k = kernel();
    let peer_of = |service: ServiceKind| Bytes::from(service.as_str().as_bytes().to_vec());
    for service in ServiceKind::ALL {
        let name = format!("{service}-1");
        let frames = Message {
            envelope: envelope(0, ServiceKind::Kernel, None, 60_000),
            body: Body::Control(Control::Register(Registration {
                service,
                instance: name,
                pid: 1,
                capacity: 10_000,
                host: "gw1".into(),
                labels: Vec::new(),
            })),
        }
        .encode()
        .unwrap();
        k.on_message(peer_of(service), &frames, now());
    }
    sent(&mut k);

    let (mut delivered, mut refused) = (0, 0);
    for (id, request) in RequestKind::all().enumerate() {
        for origin in ServiceKind::ALL {
            // The kernel routes on the header; it decodes a body only when it
            // answers the request itself.
            let body = match request.target() {
                ServiceKind::Kernel => kernel_protocol::Services {}.into_request(),
                _ => invoke_request(),
            };
            let [_, body] = Message {
                envelope: envelope(0, origin, None, 0),
                body: Body::Request(body),
            }
            .encode()
            .unwrap();
            let header = isms_ipc::Header {
                envelope: envelope(id as u64, origin, Some("demo"), 60_000),
                kind: Kind::Request(request),
            };
            k.on_message(peer_of(origin), &[header.encode().unwrap(), body], now());

            let out: Vec<Outgoing> = k.drain_outbox().collect();
            let [(to, frames)] = &out[..] else {
                panic!("{request:?} from {origin}: {out:?}");
            };
            let raw = RawMessage::decode(frames).unwrap();
            let forbidden = match raw.header.kind {
                Kind::Request(kind) => {
                    assert_eq!(kind, request);
                    assert_eq!(to, &peer_of(request.target()), "{request:?}");
                    false
                }
                Kind::Reply => {
                    assert_eq!(to, &peer_of(origin), "answered to the sender");
                    match raw.decode_body().unwrap() {
                        Body::Reply(Err(f)) if f.kind == FailureKind::Forbidden => {
                            assert!(f.message.contains("may not ask"), "{f}");
                            true
                        }
                        // The kernel answered its own request.
                        _ => {
                            assert_eq!(request.target(), ServiceKind::Kernel);
                            false
                        }
                    }
                }
                other => panic!("{other:?}"),
            };
            assert_eq!(
                !forbidden,
                request.may_be_sent_by(origin),
                "{request:?} from the {origin}"
            );
            if forbidden {
                refused += 1;
            } else {
                delivered += 1;
            }
        }
    }
    assert!(
        delivered > 0 && refused > 0,
        "{delivered} delivered, {refused} refused"
    );
}

fn registration_message(service: ServiceKind, instance: &str, labels: &[(&str, &str)]) -> Message {
    Message {
        envelope: envelope(0, ServiceKind::Kernel, None, 60_000),
        body: Body::Control(Control::Register(Registration {
            service,
            instance: instance.into(),
            pid: 1,
            capacity: 4,
            host: "shed-gw".into(),
            labels: labels
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        })),
    }
}

/// Only a Doer or a CommServer, named `<service>@<name>`, registers over a
/// link from another host; any other registration is refused, with the
/// reason, and its link is closed.
#[test]
fn a_link_from_another_host_registers_only_a_doer_or_a_commserver() {
    let mut k = kernel();
    for (service, instance) in [
        (ServiceKind::ControlGate, "control-gate@shed"),
        (ServiceKind::Resadmin, "resadmin@shed"),
        (ServiceKind::DBriver, "dbriver@shed"),
        (ServiceKind::Doer, "doer-1"),
    ] {
        let link = Bytes::from(format!("\0link-{instance}"));
        k.on_link(link.clone(), "10.0.0.2:5000".into());
        let frames = registration_message(service, instance, &[])
            .encode()
            .unwrap();
        k.on_message(link.clone(), &frames, now());
        let out = sent(&mut k);
        assert!(
            matches!(&out[..], [(to, Body::Control(Control::Refused(_)), _)] if *to == link),
            "{instance}: {out:?}"
        );
        assert_eq!(k.drain_closing().collect::<Vec<_>>(), vec![link]);
    }
    // A closed link's late frames are still a link's: they cannot register
    // what a link may not.
    let closed = Bytes::from_static(b"\0link-closed");
    k.on_link(closed.clone(), "10.0.0.2:5002".into());
    k.on_disconnect(&closed, now());
    let frames = registration_message(ServiceKind::ControlGate, "control-gate-1", &[])
        .encode()
        .unwrap();
    k.on_message(closed.clone(), &frames, now());
    assert!(
        matches!(
            &sent(&mut k)[..],
            [(_, Body::Control(Control::Refused(_)), _)]
        ),
        "a closed link registered"
    );
    k.drain_closing();
    let link = Bytes::from_static(b"\0link-doer");
    k.on_link(link.clone(), "10.0.0.2:5001".into());
    let frames = registration_message(ServiceKind::Doer, "doer@shed", &[("site", "shed")])
        .encode()
        .unwrap();
    k.on_message(link.clone(), &frames, now());
    assert!(matches!(
        &sent(&mut k)[..],
        [(_, Body::Control(Control::Registered), _)]
    ));
    let status = k.statuses(now());
    let doer = status.iter().find(|s| s.instance == "doer@shed").unwrap();
    assert_eq!(doer.remote.as_deref(), Some("10.0.0.2:5001"));
    assert_eq!(doer.host, "shed-gw");
    assert!(
        !status.iter().any(|s| s.instance.contains("control-gate")),
        "{status:?}"
    );
}

/// Work placed by labels goes only to an instance with those labels, even
/// when another has more room, and answers at once when none is up.
#[test]
fn placed_work_goes_only_to_a_matching_instance() {
    let mut k = kernel();
    register(&mut k, COMM, ServiceKind::CommServer, "commserver-1", 8);
    register(&mut k, DOER, ServiceKind::Doer, "doer-1", 100);
    let placed = |k: &mut Kernel, id: u64, site: &str| {
        let mut env = envelope(id, ServiceKind::CommServer, Some("demo"), 5_000);
        env.placement = vec![("site".into(), site.into())];
        send(
            k,
            COMM,
            Message {
                envelope: env,
                body: Body::Request(invoke_request()),
            },
        );
        sent(k)
    };
    let out = placed(&mut k, 1, "shed");
    assert!(
        matches!(&out[..], [(to, Body::Reply(Err(f)), _)] if *to == peer(COMM)
            && f.kind == FailureKind::Unavailable && f.message.contains("site=shed")),
        "{out:?}"
    );
    send(
        &mut k,
        b"shed",
        registration_message(ServiceKind::Doer, "doer-2", &[("site", "shed")]),
    );
    sent(&mut k);
    for id in 2..6 {
        let out = placed(&mut k, id, "shed");
        assert!(
            matches!(&out[..], [(to, Body::Request(_), _)] if *to == peer(b"shed")),
            "request {id}: {out:?}"
        );
    }
}

/// A Doer on another host may act for a project only while the kernel has
/// handed it one of that project's invocations.
#[test]
fn a_remote_doer_acts_only_for_projects_whose_work_it_holds() {
    let mut k = kernel();
    register(&mut k, COMM, ServiceKind::CommServer, "commserver-1", 8);
    register(&mut k, b"dbriver", ServiceKind::DBriver, "dbriver-1", 8);
    let link = Bytes::from_static(b"\0link-1");
    k.on_link(link.clone(), "10.0.0.2:5000".into());
    let frames = registration_message(ServiceKind::Doer, "doer@shed", &[])
        .encode()
        .unwrap();
    k.on_message(link.clone(), &frames, now());
    sent(&mut k);
    let sql = |k: &mut Kernel, project: &str| {
        let message = Message {
            envelope: envelope(9, ServiceKind::Doer, Some(project), 5_000),
            body: Body::Request(
                isms_ipc::dbriver::Sql {
                    query: "SELECT 1".into(),
                    params: String::new(),
                }
                .into_request(),
            ),
        };
        k.on_message(link.clone(), &message.encode().unwrap(), now());
        sent(k)
    };
    let out = sql(&mut k, "demo");
    assert!(
        matches!(&out[..], [(to, Body::Reply(Err(f)), _)] if *to == link && f.kind == FailureKind::Forbidden),
        "{out:?}"
    );
    invoke(&mut k, 1, "demo", 5_000);
    let out = sent(&mut k);
    assert!(
        matches!(&out[..], [(to, Body::Request(_), _)] if *to == link),
        "{out:?}"
    );
    let out = sql(&mut k, "demo");
    assert!(
        matches!(&out[..], [(to, Body::Request(_), _)] if *to == peer(b"dbriver")),
        "{out:?}"
    );
    let out = sql(&mut k, "other");
    assert!(
        matches!(&out[..], [(_, Body::Reply(Err(f)), _)] if f.kind == FailureKind::Forbidden),
        "{out:?}"
    );
}

fn control_from(k: &mut Kernel, from: &'static [u8], control: Control) {
    send(
        k,
        from,
        Message {
            envelope: envelope(0, ServiceKind::Kernel, None, 0),
            body: Body::Control(control),
        },
    );
}

/// A request the lost instance had deferred (it waited inside, never
/// started) goes to another instance; one it had started, or claimed, is
/// answered.
#[test]
fn what_a_lost_instance_had_not_started_goes_to_another() {
    let mut k = kernel();
    register(&mut k, COMM, ServiceKind::CommServer, "commserver-1", 8);
    register(&mut k, DOER, ServiceKind::Doer, "doer-1", 3);
    for id in 1..=3 {
        invoke(&mut k, id, "demo", 60_000);
    }
    let dispatched: Vec<MessageId> = sent(&mut k).into_iter().map(|(_, _, env)| env.id).collect();
    assert_eq!(dispatched.len(), 3);
    // The first started at once; the other two wait inside, and the
    // second is claimed: it may be starting.
    control_from(&mut k, DOER, Control::Deferred(dispatched[1]));
    control_from(&mut k, DOER, Control::Deferred(dispatched[2]));
    control_from(&mut k, DOER, Control::Claim(dispatched[1]));
    let out = sent(&mut k);
    assert!(
        matches!(&out[..], [(to, Body::Control(Control::Claimed { id, granted: true }), _)]
            if to == &peer(DOER) && *id == dispatched[1]),
        "{out:?}"
    );

    k.on_disconnect(&peer(DOER), now());
    let mut answered: Vec<u64> = sent(&mut k)
        .into_iter()
        .map(|(to, body, env)| {
            assert_eq!(to, peer(COMM));
            assert!(matches!(body, Body::Reply(Err(f)) if f.kind == FailureKind::Unavailable));
            env.id.0
        })
        .collect();
    answered.sort();
    assert_eq!(answered, vec![1, 2], "the started and the claimed one");

    // The third waits in the kernel for the next Doer, input intact, under
    // a new id.
    let out = register(&mut k, b"doer-b", ServiceKind::Doer, "doer-2", 3);
    let again = match &out[..] {
        [(to, Body::Request(Request::Doer(isms_ipc::doer::Request::Invoke(invoke))), env)]
            if to == &peer(b"doer-b")
                && &invoke.input[..] == b"x"
                && env.project.as_ref().map(|p| p.as_str()) == Some("demo") =>
        {
            env.id
        }
        _ => panic!("{out:?}"),
    };
    assert_ne!(again, dispatched[2], "a new dispatch, a new id");
    // The lost instance's claim of its copy is refused; the new one's is
    // granted, and its answer reaches the origin.
    control_from(&mut k, DOER, Control::Claim(dispatched[2]));
    let out = sent(&mut k);
    assert!(
        out.iter().all(|(_, body, _)| !matches!(
            body,
            Body::Control(Control::Claimed { granted: true, .. })
        )),
        "{out:?}"
    );
    control_from(&mut k, b"doer-b", Control::Deferred(again));
    control_from(&mut k, b"doer-b", Control::Claim(again));
    assert!(matches!(
        &sent(&mut k)[..],
        [(_, Body::Control(Control::Claimed { granted: true, .. }), _)]
    ));
    send(
        &mut k,
        b"doer-b",
        Message {
            envelope: envelope(again.0, ServiceKind::Doer, None, 0),
            body: Body::Reply(Err(Failure::invalid("done"))),
        },
    );
    let out = sent(&mut k);
    assert!(
        matches!(&out[..], [(to, Body::Reply(Err(f)), env)] if to == &peer(COMM) && env.id == MessageId(3) && f.message == "done"),
        "{out:?}"
    );
}

/// A Doer that went silent (its deferred work taken back) and registers
/// again from the same connection gets that work again under a new id: the
/// copy it still holds from before can neither be claimed nor answer.
#[test]
fn a_doer_back_from_silence_cannot_start_its_old_copy() {
    let mut k = setup();
    invoke(&mut k, 1, "demo", 60_000);
    let old = sent(&mut k)[0].2.id;
    control_from(&mut k, DOER, Control::Deferred(old));
    advance(Duration::from_millis(2_300));
    k.on_tick(now());
    assert!(sent(&mut k).is_empty(), "taken back, not answered");
    // Its next heartbeat is told to register again; it does, same peer.
    let out = register(&mut k, DOER, ServiceKind::Doer, "doer-1", 1);
    let new = match &out[..] {
        [(to, Body::Request(_), env)] if to == &peer(DOER) => env.id,
        _ => panic!("{out:?}"),
    };
    assert_ne!(new, old);
    control_from(&mut k, DOER, Control::Claim(old));
    assert!(matches!(
        &sent(&mut k)[..],
        [(_, Body::Control(Control::Claimed { granted: false, .. }), _)]
    ));
    reply_from_doer(&mut k, old);
    assert!(sent(&mut k).is_empty(), "the old copy's answer is dropped");
    control_from(&mut k, DOER, Control::Deferred(new));
    control_from(&mut k, DOER, Control::Claim(new));
    assert!(matches!(
        &sent(&mut k)[..],
        [(_, Body::Control(Control::Claimed { granted: true, .. }), _)]
    ));
    reply_from_doer(&mut k, new);
    assert!(
        matches!(&sent(&mut k)[..], [(to, Body::Reply(_), env)] if to == &peer(COMM) && env.id == MessageId(1))
    );
}

/// A deferred request whose origin timed out is not worth starting: the
/// claim is refused and the instance's capacity is freed at once, not
/// after the orphan grace.
#[test]
fn a_claim_for_a_request_answered_meanwhile_is_refused() {
    let mut k = setup();
    invoke(&mut k, 1, "demo", 1_000);
    invoke(&mut k, 2, "demo", 60_000);
    let dispatched = sent(&mut k);
    assert_eq!(dispatched.len(), 1, "capacity 1");
    let id = dispatched[0].2.id;
    control_from(&mut k, DOER, Control::Deferred(id));
    advance(Duration::from_millis(1_000));
    k.on_tick(now());
    assert!(
        matches!(&sent(&mut k)[..], [(_, Body::Reply(Err(f)), _)] if f.kind == FailureKind::Timeout)
    );
    control_from(&mut k, DOER, Control::Claim(id));
    let out = sent(&mut k);
    assert!(
        matches!(&out[..], [(_, Body::Control(Control::Claimed { granted: false, .. }), _), (to, Body::Request(_), env)]
            if to == &peer(DOER) && env.id == MessageId(2)),
        "refused, and the next request takes the freed capacity: {out:?}"
    );
}

/// Only the instance a request was dispatched to can defer or claim it.
#[test]
fn another_instance_cannot_defer_or_claim_a_request() {
    let mut k = setup();
    register(&mut k, b"doer-b", ServiceKind::Doer, "doer-2", 1);
    invoke(&mut k, 1, "demo", 60_000);
    let out = sent(&mut k);
    let (to, _, env) = &out[0];
    let other: &'static [u8] = if to == &peer(DOER) { b"doer-b" } else { DOER };
    control_from(&mut k, other, Control::Deferred(env.id));
    control_from(&mut k, other, Control::Claim(env.id));
    assert!(matches!(
        &sent(&mut k)[..],
        [(_, Body::Control(Control::Claimed { granted: false, .. }), _)]
    ));
    // Not deferred by its own instance: losing it answers the origin.
    k.on_disconnect(to, now());
    assert!(
        matches!(&sent(&mut k)[..], [(_, Body::Reply(Err(f)), _)] if f.kind == FailureKind::Unavailable)
    );
}
