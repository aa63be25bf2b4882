//! Round trips and refusals of the wire protocol.

use crate::doer::{self, DoeeFailure, LogLevel, LogLine, Outcome, Response, Trigger};
use crate::message::{Body, Control, Envelope, Failure, FailureKind, Kind, Message, RawMessage};
use crate::names::{
    Deadline, DoeeName, InvocationId, MessageId, Priority, ProjectName, ServiceKind,
};
use crate::worker::{Execute, FromWorker, ToWorker};
use crate::{Call, Event, Reply, Request, RequestKind, kernel, resadmin};
use bytes::Bytes;
use proptest::prelude::*;

fn envelope(project: Option<&str>) -> Envelope {
    Envelope {
        id: MessageId(42),
        origin: ServiceKind::CommServer,
        project: project.map(|p| ProjectName::new(p).unwrap()),
        priority: Priority::High,
        deadline: Deadline(1_700_000_000_000),
        placement: vec![("site".into(), "shed".into())],
    }
}

fn invoke(input: &[u8]) -> Request {
    doer::Invoke {
        id: InvocationId(7),
        doee: DoeeName::new("hello").unwrap(),
        version: 3,
        trigger: Trigger::Http {
            method: "POST".into(),
            path: "/hello".into(),
            query: "a=1".into(),
        },
        input: Bytes::copy_from_slice(input),
        stream: true,
    }
    .into_request()
}

fn samples() -> Vec<Message> {
    let outcome = Outcome {
        result: Ok(Response {
            status: Some(201),
            headers: vec![("x".into(), "y".into())],
            body: Bytes::from_static(b"Hello, world!"),
        }),
        logs: vec![LogLine {
            at_ms: 1,
            level: LogLevel::Info,
            message: "hi".into(),
        }],
        cold_start: true,
        run_us: 12,
    };
    vec![
        Message {
            envelope: envelope(Some("demo")),
            body: Body::Request(invoke(b"world")),
        },
        Message {
            envelope: envelope(None),
            body: Body::Reply(Ok(Reply::Doer(doer::Reply::Invoke(outcome)))),
        },
        Message {
            envelope: envelope(None),
            body: Body::Reply(Err(Failure::new(FailureKind::Busy, "full"))),
        },
        Message {
            envelope: envelope(None),
            body: Body::Request(kernel::Services {}.into_request()),
        },
        Message {
            envelope: envelope(Some("demo")),
            body: Body::Request(
                resadmin::Deploy {
                    by: crate::Username::new("ada").unwrap(),
                    archive: Bytes::from(vec![0u8; 5000]),
                }
                .into_request(),
            ),
        },
        Message {
            envelope: envelope(None),
            body: Body::Event(Event::DeploymentsChanged {
                project: ProjectName::new("demo").unwrap(),
            }),
        },
        Message {
            envelope: envelope(None),
            body: Body::Control(Control::Heartbeat(Default::default())),
        },
    ]
}

#[test]
fn every_sample_round_trips() {
    for message in samples() {
        let frames = message.encode().unwrap();
        assert_eq!(Message::decode(&frames).unwrap(), message);
    }
}

#[test]
fn the_kernel_reads_the_header_and_keeps_the_body() {
    let message = &samples()[0];
    let frames = message.encode().unwrap();
    let raw = RawMessage::decode(&frames).unwrap();
    assert_eq!(
        raw.header.kind,
        Kind::Request(RequestKind::Doer(doer::RequestKind::Invoke))
    );
    assert_eq!(
        raw.body, frames[1],
        "the body frame is forwarded as received"
    );
    let mut rerouted = raw.clone();
    rerouted.header.envelope.id = MessageId(99);
    let again = Message::decode(&rerouted.encode().unwrap()).unwrap();
    assert_eq!(again.envelope.id, MessageId(99));
    assert_eq!(again.body, message.body);
}

#[test]
fn a_header_that_disagrees_with_its_body_is_refused() {
    let request = &samples()[0];
    let reply = &samples()[1];
    let [_, request_body] = request.encode().unwrap();
    let [reply_header, _] = reply.encode().unwrap();
    let err = Message::decode(&[reply_header, request_body]).unwrap_err();
    assert!(err.to_string().contains("header says Reply"), "{err}");
}

/// The kernel lets a request through on its header's word; the receiver
/// holds the body to it, so a header cannot smuggle in another request.
#[test]
fn a_header_naming_another_request_is_refused() {
    let request = &samples()[0];
    let mut raw = RawMessage::decode(&request.encode().unwrap()).unwrap();
    raw.header.kind = Kind::Request(RequestKind::Kernel(kernel::RequestKind::Services));
    let err = Message::decode(&raw.encode().unwrap()).unwrap_err();
    assert!(err.to_string().contains("Services"), "{err}");
}

#[test]
fn every_request_declares_its_senders() {
    // A Doee's call of another (`ctx.invoke`) is the one request a
    // service sends its own kind; the kernel gives it to the caller's Doer.
    let chained = RequestKind::Doer(doer::RequestKind::Invoke);
    for kind in RequestKind::all() {
        assert!(!kind.senders().is_empty(), "{kind:?}");
        assert_eq!(
            kind.may_be_sent_by(kind.target()),
            kind == chained,
            "{kind:?}: no service asks itself but a Doer calling a Doee"
        );
    }
}

#[test]
fn bad_frames_are_errors() {
    let [header, body] = samples()[0].encode().unwrap();
    let cases: Vec<(Vec<Bytes>, &str)> = vec![
        (vec![header.clone()], "expected 2 frames"),
        (
            vec![header.clone(), body.clone(), body.clone()],
            "expected 2 frames",
        ),
        (vec![Bytes::new(), body.clone()], "empty"),
        (
            vec![
                Bytes::from([&[9u8][..], &header[1..]].concat()),
                body.clone(),
            ],
            "protocol version 9",
        ),
        (
            vec![header.slice(..header.len() - 1), body.clone()],
            "malformed header",
        ),
        (
            vec![header.clone(), body.slice(..body.len() / 2)],
            "malformed body",
        ),
        (
            vec![
                Bytes::from([&header[..], &[0u8][..]].concat()),
                body.clone(),
            ],
            "trailing",
        ),
    ];
    for (frames, expected) in cases {
        let err = Message::decode(&frames).unwrap_err().to_string();
        assert!(err.contains(expected), "expected `{expected}` in `{err}`");
    }
}

#[test]
fn an_invalid_name_inside_a_message_is_refused() {
    let mut header = samples()[0].encode().unwrap()[0].to_vec();
    let at = header.windows(4).position(|w| w == b"demo").unwrap();
    header[at..at + 4].copy_from_slice(b"../x");
    let [_, body] = samples()[0].encode().unwrap();
    assert!(Message::decode(&[Bytes::from(header), body]).is_err());
}

#[test]
fn replies_pair_with_their_requests() {
    let outcome = Outcome {
        result: Err(DoeeFailure::TimedOut { after_ms: 5 }),
        logs: vec![],
        cold_start: false,
        run_us: 0,
    };
    let reply = Reply::Doer(doer::Reply::Invoke(outcome.clone()));
    assert_eq!(doer::Invoke::from_reply(reply.clone()), Some(outcome));
    assert_eq!(kernel::Services::from_reply(reply), None);
}

#[test]
fn worker_messages_round_trip() {
    let message = ToWorker::Execute(Execute {
        id: InvocationId(1),
        trigger: Trigger::Mqtt {
            topic: "a/b".into(),
        },
        input: Bytes::from_static(b"x"),
        stream: false,
    });
    assert_eq!(
        ToWorker::decode(&message.encode().unwrap()).unwrap(),
        message
    );
    // Stop (variant 3 of ToWorker) has no FromWorker counterpart.
    assert!(FromWorker::decode(&ToWorker::Stop.encode().unwrap()).is_err());
    assert!(FromWorker::decode(&[1, 200, 200]).is_err());
    assert!(FromWorker::decode(&[]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_frames_never_panic(header in proptest::collection::vec(any::<u8>(), 0..64),
                                 body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Message::decode(&[Bytes::from(header.clone()), Bytes::from(body)]);
        let _ = ToWorker::decode(&header);
        let _ = FromWorker::decode(&header);
    }

    #[test]
    fn mutated_messages_never_panic(which in 0usize..7, frame in 0usize..2,
                                    at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let frames = samples()[which].encode().unwrap();
        let mut bytes = frames[frame].to_vec();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        let mut mutated = frames.to_vec();
        mutated[frame] = Bytes::from(bytes);
        let _ = Message::decode(&mutated);
    }

    #[test]
    fn invocations_round_trip(input in proptest::collection::vec(any::<u8>(), 0..2048),
                              project in "[a-z0-9][a-z0-9-]{0,62}",
                              id in any::<u64>(), deadline in any::<u64>(),
                              priority in prop_oneof![Just(Priority::High), Just(Priority::Normal), Just(Priority::Low)]) {
        let message = Message {
            envelope: Envelope {
                id: MessageId(id),
                origin: ServiceKind::CommServer,
                project: Some(ProjectName::new(project).unwrap()),
                priority,
                deadline: Deadline(deadline),
                placement: Vec::new(),
            },
            body: Body::Request(invoke(&input)),
        };
        let decoded = Message::decode(&message.encode().unwrap()).unwrap();
        prop_assert_eq!(decoded, message);
    }
}
