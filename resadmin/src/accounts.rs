//! Accounts: the initial admin, logins, users and their API tokens.

use crate::store::{DeleteUser, Store};
use crate::{ResadminConfig, State, auth, db_failure};
use anyhow::Context as _;
use isms_ipc::names::now_ms;
use isms_ipc::resadmin::{self as protocol, NewToken, Role, Session, UserInfo};
use isms_ipc::{Failure, FailureKind, Username};

impl State {
    pub(crate) async fn login(
        &self,
        username: String,
        password: String,
    ) -> Result<Session, Failure> {
        let wrong = || Failure::new(FailureKind::Unauthenticated, "wrong username or password");
        let user = self.store.user(&username).await.map_err(db_failure)?;
        // Verify against a dummy hash when the user does not exist, so the
        // answer takes as long either way.
        let stored = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| DUMMY_HASH.into());
        let ok = tokio::task::spawn_blocking(move || auth::verify_password(&password, &stored))
            .await
            .unwrap_or(false);
        let user = match user {
            Some(user) if ok => user,
            _ => return Err(wrong()),
        };
        let (token, hash) = auth::new_token().map_err(Failure::internal)?;
        let expires_ms = now_ms() + self.config.token_ttl.as_millis() as u64;
        self.store
            .insert_token(&hash, &user.name, "login", expires_ms)
            .await
            .map_err(db_failure)?;
        Ok(Session {
            token,
            user: user.name,
            role: user.role,
            expires_ms,
        })
    }

    pub(crate) async fn create_user(&self, r: protocol::CreateUser) -> Result<UserInfo, Failure> {
        if r.password.chars().count() < 8 {
            return Err(Failure::invalid(
                "`password` must have at least 8 characters",
            ));
        }
        let password = r.password;
        let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
            .await
            .map_err(Failure::internal)?
            .map_err(Failure::internal)?;
        if !self
            .store
            .create_user(&r.username, &hash, r.role)
            .await
            .map_err(db_failure)?
        {
            return Err(Failure::new(
                FailureKind::Conflict,
                format!("user `{}` already exists", r.username),
            ));
        }
        Ok(UserInfo {
            name: r.username,
            role: r.role,
            created_ms: now_ms(),
        })
    }

    pub(crate) async fn create_token(
        &self,
        by: &Username,
        name: &str,
        days: u32,
    ) -> Result<NewToken, Failure> {
        let name = name.trim();
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(Failure::invalid(
                "`name` must be 1 to 64 printable characters",
            ));
        }
        if !(1..=3650).contains(&days) {
            return Err(Failure::invalid("`days` must be between 1 and 3650"));
        }
        let (token, hash) = auth::new_token().map_err(Failure::internal)?;
        let expires_ms = now_ms() + u64::from(days) * 24 * 3600 * 1000;
        let info = self
            .store
            .insert_token(&hash, by, name, expires_ms)
            .await
            .map_err(db_failure)?;
        Ok(NewToken { token, info })
    }

    pub(crate) async fn logout(&self, token: &str) -> Result<(), Failure> {
        self.store
            .revoke_token_hash(&auth::token_hash(token))
            .await
            .map_err(db_failure)?;
        Ok(())
    }

    pub(crate) async fn delete_user(&self, username: &Username) -> Result<(), Failure> {
        match self.store.delete_user(username).await.map_err(db_failure)? {
            DeleteUser::Deleted => Ok(()),
            DeleteUser::NoSuchUser => Err(Failure::not_found(format!("no user `{username}`"))),
            DeleteUser::LastAdmin => Err(Failure::new(
                FailureKind::Conflict,
                format!("`{username}` is the last admin; make another admin first"),
            )),
        }
    }

    pub(crate) async fn revoke_token(&self, by: &Username, id: &str) -> Result<(), Failure> {
        if self.store.revoke_token(by, id).await.map_err(db_failure)? {
            Ok(())
        } else {
            Err(Failure::not_found(format!("you have no token `{id}`")))
        }
    }
}

/// Creates the `admin` user with a random password on the first start, and
/// writes the password to `<data-dir>/initial-admin-password` (mode 0600).
pub(crate) async fn create_initial_admin(
    store: &Store,
    config: &ResadminConfig,
) -> anyhow::Result<()> {
    if store.user_count().await? > 0 {
        return Ok(());
    }
    let password = auth::random_password().map_err(anyhow::Error::msg)?;
    let hash =
        tokio::task::spawn_blocking(move || auth::hash_password(&password).map(|h| (password, h)))
            .await?
            .map_err(anyhow::Error::msg)?;
    let path = ResadminConfig::initial_password_file(&config.data_dir);
    isms_ipc::secret_file::write(&path, format!("{}\n", hash.0).as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    let admin = Username::new("admin").map_err(anyhow::Error::msg)?;
    store.create_user(&admin, &hash.1, Role::Admin).await?;
    tracing::info!(file = %path.display(), "created the initial admin user");
    Ok(())
}

/// An argon2 hash of a random password, verified against when the user does
/// not exist so that a login's timing does not reveal which users exist.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$FfAWhxqSbzxsNvmNMCK3ICPH1uqWwvqUTyXGBjIkAWw";
