//! Running what a trigger names: its own Doee, or the Doees of its
//! `pipeline` in turn, the trigger's input to the first, each output the
//! next one's input, the last one's output the answer (OneOS's pipes).
//!
//! Each stage is an invocation of its own, recorded by the Doer that runs
//! it; a stage after the first is linked to the one before it
//! (`Trigger::Chain`). The first failure ends the pipeline and is the
//! answer, with the failing stage's invocation id.

use bytes::Bytes;
use isms_ipc::doer::{Outcome, Trigger};
use isms_ipc::resadmin::{Stage, Target};
use isms_ipc::{Connection, Failure, FailureKind, InvocationId};
use std::time::Duration;

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
    let mut ran = Ran {
        id,
        outcome: Err(Failure::internal("an empty pipeline")),
    };
    let mut input = input;
    for (depth, stage) in pipeline.iter().enumerate() {
        let Some(target) = &stage.target else {
            ran.outcome = Err(Failure::new(
                FailureKind::Unavailable,
                format!(
                    "pipeline stage `{}` has no built version in project `{}`",
                    stage.doee, target.project
                ),
            ));
            return ran;
        };
        let (id, trigger) = match depth {
            0 => (id, trigger.clone()),
            _ => (
                InvocationId::generate(),
                Trigger::Chain {
                    parent: ran.id,
                    depth: depth as u8,
                },
            ),
        };
        let (scope, invoke) = target.invoke(id, trigger, input, allowance);
        ran = Ran {
            id,
            outcome: conn.call(&scope, invoke).await.map_err(|failure| {
                Failure::new(
                    failure.kind,
                    format!("pipeline stage `{}`: {}", stage.doee, failure.message),
                )
            }),
        };
        input = match &ran.outcome {
            Ok(Outcome {
                result: Ok(response),
                ..
            }) => response.body.clone(),
            _ => return ran,
        };
    }
    ran
}
