//! Authorization: who may do what, and to which project. The Control Gate
//! asks [`Authorize`](isms_ipc::resadmin::Authorize) before it acts for a
//! person; the answer is the caller or why not.

use crate::store::TokenCheck;
use crate::{State, auth, db_failure, forbidden, no_project};
use isms_ipc::names::now_ms;
use isms_ipc::resadmin::{Caller, Need, Role};
use isms_ipc::{Failure, FailureKind, ProjectName};

impl State {
    /// Checks a token and that its user holds `need`. The order of the
    /// checks decides what a refused caller learns: no token or a bad one
    /// (401) before anything else; a project the caller is not a member of
    /// reads as missing (404), so names do not leak; a member without the
    /// role gets 403.
    pub(crate) async fn authorize(
        &self,
        token: &str,
        need: Need,
        project: Option<ProjectName>,
    ) -> Result<Caller, Failure> {
        let unauthenticated = |message: String| Failure::new(FailureKind::Unauthenticated, message);
        if token.is_empty() {
            return Err(unauthenticated(
                "log in first: no token was given (Authorization: Bearer <token>)".into(),
            ));
        }
        let caller = match self
            .store
            .token_user(&auth::token_hash(token))
            .await
            .map_err(db_failure)?
        {
            TokenCheck::Valid(user, role) => Caller { user, role },
            TokenCheck::Expired { expires_ms } => {
                return Err(unauthenticated(format!(
                    "the token expired {} ago: log in again",
                    ago(expires_ms)
                )));
            }
            TokenCheck::Unknown => {
                return Err(unauthenticated(
                    "the token is unknown or was revoked: log in again".into(),
                ));
            }
        };
        match need {
            Need::User => Ok(caller),
            Need::Admin if caller.role == Role::Admin => Ok(caller),
            Need::Admin => Err(forbidden("only an admin may do that")),
            Need::Creator if caller.role != Role::Viewer => Ok(caller),
            Need::Creator => Err(forbidden("a viewer may not create projects")),
            Need::Project(needed) => {
                let project =
                    project.ok_or_else(|| Failure::invalid("this request needs a project"))?;
                if !self
                    .store
                    .project_exists(&project)
                    .await
                    .map_err(db_failure)?
                {
                    return Err(no_project(&project));
                }
                if caller.role == Role::Admin {
                    return Ok(caller);
                }
                match self
                    .store
                    .member_role(&project, &caller.user)
                    .await
                    .map_err(db_failure)?
                {
                    None => Err(no_project(&project)),
                    // Roles order Admin < Developer < Viewer: lower is stronger.
                    Some(role) if role <= needed => Ok(caller),
                    Some(role) => Err(forbidden(format!(
                        "a {} of `{project}` may not do that; it needs a {}",
                        role.as_str(),
                        needed.as_str()
                    ))),
                }
            }
        }
    }
}

/// How long ago a time (ms since the epoch) was, for messages.
fn ago(at_ms: u64) -> String {
    let secs = now_ms().saturating_sub(at_ms) / 1000;
    match secs {
        0..120 => format!("{secs} s"),
        120..7200 => format!("{} min", secs / 60),
        7200..172_800 => format!("{} h", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    }
}
