//! Who may log in: users, their tokens (stored only as a sha256) and the
//! checks a login or a request's token goes through.

use super::{Store, StoreResult, decode_err, parse_role};
use isms_ipc::Username;
use isms_ipc::names::now_ms;
use isms_ipc::resadmin::{Role, TokenInfo, UserInfo};
use sqlx::Row;

/// A user as stored.
pub struct UserRow {
    /// The name.
    pub name: Username,
    /// The argon2 hash of their password.
    pub password_hash: String,
    /// Their platform role.
    pub role: Role,
}

/// How many hex digits of a token's hash name it in lists.
const TOKEN_ID_LEN: usize = 12;

fn token_id(hash: &str) -> String {
    hash.chars().take(TOKEN_ID_LEN).collect()
}

/// What a token is worth.
pub enum TokenCheck {
    /// It belongs to this user, with this platform role.
    Valid(Username, Role),
    /// It expired then (ms since the epoch).
    Expired {
        /// When.
        expires_ms: u64,
    },
    /// No such token (never issued, or revoked).
    Unknown,
}

/// What deleting a user did.
pub enum DeleteUser {
    /// Gone.
    Deleted,
    /// There was no such user.
    NoSuchUser,
    /// Refused: the platform would have no admin left.
    LastAdmin,
}

impl Store {
    /// How many users exist.
    pub async fn user_count(&self) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(&self.pool)
            .await
    }

    /// Creates a user; `false` if the name is taken.
    pub async fn create_user(
        &self,
        name: &Username,
        password_hash: &str,
        role: Role,
    ) -> StoreResult<bool> {
        let result = sqlx::query("INSERT OR IGNORE INTO users (name, password_hash, role, created_ms) VALUES (?, ?, ?, ?)")
            .bind(name.as_str())
            .bind(password_hash)
            .bind(role.as_str())
            .bind(now_ms() as i64)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    /// A user by name.
    pub async fn user(&self, name: &str) -> StoreResult<Option<UserRow>> {
        let row = sqlx::query("SELECT name, password_hash, role FROM users WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(UserRow {
                name: Username::new(row.get::<String, _>(0))
                    .map_err(|_| decode_err("user name"))?,
                password_hash: row.get(1),
                role: parse_role(row.get::<&str, _>(2))?,
            })
        })
        .transpose()
    }

    /// Stores a token's hash under a label.
    pub async fn insert_token(
        &self,
        hash: &str,
        user: &Username,
        name: &str,
        expires_ms: u64,
    ) -> StoreResult<TokenInfo> {
        let created_ms = now_ms();
        sqlx::query(
            "INSERT INTO tokens (hash, user, name, created_ms, expires_ms) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(hash)
        .bind(user.as_str())
        .bind(name)
        .bind(created_ms as i64)
        .bind(expires_ms as i64)
        .execute(&self.pool)
        .await?;
        Ok(TokenInfo {
            id: token_id(hash),
            name: name.to_string(),
            created_ms,
            expires_ms,
        })
    }

    /// Who a token belongs to, or why it does not count.
    pub async fn token_user(&self, hash: &str) -> StoreResult<TokenCheck> {
        let row = sqlx::query(
            "SELECT users.name, users.role, tokens.expires_ms FROM tokens \
             JOIN users ON users.name = tokens.user WHERE tokens.hash = ?",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(TokenCheck::Unknown);
        };
        let expires_ms = row.get::<i64, _>(2) as u64;
        if expires_ms <= now_ms() {
            return Ok(TokenCheck::Expired { expires_ms });
        }
        let name = Username::new(row.get::<String, _>(0)).map_err(|_| decode_err("user name"))?;
        Ok(TokenCheck::Valid(name, parse_role(row.get::<&str, _>(1))?))
    }

    /// Revokes a token by its hash; `false` if it did not exist.
    pub async fn revoke_token_hash(&self, hash: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM tokens WHERE hash = ?")
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Revokes one of `user`'s tokens by its id; `false` if they have none
    /// with that id.
    pub async fn revoke_token(&self, user: &Username, id: &str) -> StoreResult<bool> {
        if id.len() != TOKEN_ID_LEN || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(false);
        }
        let done = sqlx::query("DELETE FROM tokens WHERE user = ? AND substr(hash, 1, ?) = ?")
            .bind(user.as_str())
            .bind(TOKEN_ID_LEN as i64)
            .bind(id.to_ascii_lowercase())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// `user`'s unexpired tokens, newest first.
    pub async fn tokens(&self, user: &Username) -> StoreResult<Vec<TokenInfo>> {
        let rows = sqlx::query(
            "SELECT hash, name, created_ms, expires_ms FROM tokens \
             WHERE user = ? AND expires_ms > ? ORDER BY created_ms DESC",
        )
        .bind(user.as_str())
        .bind(now_ms() as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| TokenInfo {
                id: token_id(row.get::<&str, _>(0)),
                name: row.get(1),
                created_ms: row.get::<i64, _>(2) as u64,
                expires_ms: row.get::<i64, _>(3) as u64,
            })
            .collect())
    }

    /// Every user, by name.
    pub async fn users(&self) -> StoreResult<Vec<UserInfo>> {
        let rows = sqlx::query("SELECT name, role, created_ms FROM users ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok(UserInfo {
                    name: Username::new(row.get::<String, _>(0))
                        .map_err(|_| decode_err("user name"))?,
                    role: parse_role(row.get::<&str, _>(1))?,
                    created_ms: row.get::<i64, _>(2) as u64,
                })
            })
            .collect()
    }

    /// Deletes a user with their tokens and memberships, unless they are
    /// the last admin.
    pub async fn delete_user(&self, name: &Username) -> StoreResult<DeleteUser> {
        let mut tx = self.pool.begin().await?;
        let role: Option<String> = sqlx::query_scalar("SELECT role FROM users WHERE name = ?")
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(role) = role else {
            return Ok(DeleteUser::NoSuchUser);
        };
        if parse_role(&role)? == Role::Admin {
            let admins: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE role = 'admin'")
                .fetch_one(&mut *tx)
                .await?;
            if admins <= 1 {
                return Ok(DeleteUser::LastAdmin);
            }
        }
        sqlx::query("DELETE FROM users WHERE name = ?")
            .bind(name.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(DeleteUser::Deleted)
    }
}
