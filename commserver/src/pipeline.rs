//! Running what a trigger names: its own Doee, or the Doees of its
//! `pipeline` in turn, the trigger's input to the first, each output the
//! next one's input, the last one's output the answer (OneOS's pipes).
//!
//! Each stage is an invocation of its own, recorded by the Doer that runs
//! it; a stage after the first is linked to the one before it
//! (`Trigger::Chain`), one level deeper: a stage's place counts towards
//! `doer.max_chain_depth` for the calls it makes. The first failure ends
//! the pipeline and is the answer, with the failing stage's invocation id.
//! An MQTT message whose pipeline failed is run again whole, from the
//! first stage, like any failed message.

use bytes::Bytes;
use isms_ipc::doer::{Invoke, Outcome, Trigger};
use isms_ipc::names::now_ms;
use isms_ipc::resadmin::{InvocationRecord, InvocationStatus, Record, Stage, Target};
use isms_ipc::{Connection, Failure, FailureKind, InvocationId, ProjectName};
use std::time::Duration;

/// The record of an invocation as the CommServer sees it before a Doer
/// has (a Doer records every invocation it runs): pending, or failed with
/// `failure` after `took` because no Doer ran it.
pub fn record(
    project: ProjectName,
    invoke: &Invoke,
    failure: Option<(&Failure, Duration)>,
) -> InvocationRecord {
    let mut record = InvocationRecord {
        id: invoke.id,
        project,
        doee: invoke.doee.clone(),
        version: invoke.version,
        trigger: invoke.trigger.clone(),
        status: InvocationStatus::Pending,
        started_ms: now_ms(),
        duration_us: 0,
        cold_start: false,
        http_status: 0,
        error: None,
        output: Bytes::new(),
        output_truncated: false,
        logs: Vec::new(),
        instance: String::new(),
        host: String::new(),
    };
    if let Some((failure, took)) = failure {
        record.status = match failure.kind {
            FailureKind::Busy => InvocationStatus::Busy,
            FailureKind::Timeout => InvocationStatus::Timeout,
            _ => InvocationStatus::Unavailable,
        };
        record.http_status = failure.kind.http_status();
        record.started_ms = record.started_ms.saturating_sub(took.as_millis() as u64);
        record.duration_us = took.as_micros() as u64;
        record.error = Some(failure.message.clone());
    }
    record
}

/// Records an invocation no Doer ran (`failure` after `took`); a failure
/// to record is logged.
pub async fn record_not_run(
    conn: &Connection,
    project: ProjectName,
    invoke: &Invoke,
    failure: &Failure,
    took: Duration,
) {
    let invocations = vec![record(project, invoke, Some((failure, took)))];
    let recording = isms_ipc::Scope::platform(Duration::from_secs(5));
    if let Err(why) = conn.call(&recording, Record { invocations }).await {
        tracing::warn!(id = %invoke.id, %why, "cannot record an invocation that did not run");
    }
}

/// What ran last, and how it ended: the answer.
pub struct Ran {
    /// The invocation that answers: the last stage, or the one that failed.
    pub id: InvocationId,
    /// How it ended.
    pub outcome: Result<Outcome, Failure>,
}

/// Runs `target`, or `pipeline` when it has stages. `id` is the first
/// invocation's; each stage gets the Doee's own timeout, plus `allowance`
/// to wait in queues.
pub async fn run(
    conn: &Connection,
    target: &Target,
    pipeline: &[Stage],
    id: InvocationId,
    trigger: Trigger,
    input: Bytes,
    allowance: Duration,
) -> Ran {
    if pipeline.is_empty() {
        let (scope, invoke) = target.invoke(id, trigger, input, allowance);
        let outcome = conn.call(&scope, invoke).await;
        return Ran { id, outcome };
    }
    let (mut id, mut trigger, mut input) = (id, trigger, input);
    for (depth, stage) in pipeline.iter().enumerate() {
        if depth > 0 {
            (id, trigger) = (
                InvocationId::generate(),
                Trigger::Chain {
                    parent: id,
                    depth: depth as u8,
                },
            );
        }
        let Some(stage_target) = &stage.target else {
            let failure = Failure::new(
                FailureKind::Unavailable,
                format!(
                    "pipeline stage `{}` has no built version in project `{}`",
                    stage.doee, target.project
                ),
            );
            let invoke = Invoke {
                id,
                doee: stage.doee.clone(),
                version: 0,
                trigger,
                input,
                stream: false,
            };
            record_not_run(
                conn,
                target.project.clone(),
                &invoke,
                &failure,
                Duration::ZERO,
            )
            .await;
            return Ran {
                id,
                outcome: Err(failure),
            };
        };
        let (scope, invoke) = stage_target.invoke(id, trigger.clone(), input, allowance);
        let outcome = conn.call(&scope, invoke).await.map_err(|failure| {
            Failure::new(
                failure.kind,
                format!("pipeline stage `{}`: {}", stage.doee, failure.message),
            )
        });
        input = match &outcome {
            Ok(Outcome {
                result: Ok(response),
                ..
            }) if depth + 1 < pipeline.len() => response.body.clone(),
            _ => return Ran { id, outcome },
        };
    }
    // Not reached: the last stage answers.
    Ran {
        id,
        outcome: Err(Failure::internal("an empty pipeline")),
    }
}
