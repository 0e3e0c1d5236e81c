//! `DELETE /api/admin/users/{id}`: erasing a user and everything held about them, when a
//! learner asks for it.
//!
//! The user row is deleted, not anonymised: every credential (session, token) resolves to a
//! user row, so with the row gone a device of that user that comes back is refused at the
//! WebSocket upgrade (401) and can never recreate a document (the store also refuses
//! documents of a user that does not exist). What stays is an audit entry naming the user by
//! a pseudonym, [`subject`], never by id, email or name. The whole erasure is one database
//! transaction ([`crate::store::Store::erase_user`]); see `docs/deploy.md` for what is kept.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::AdminUser;
use crate::error::{ApiError, ApiResult, ErrorBody, Json, Path, Query};
use crate::model::now_ms;
use crate::state::AppState;
use crate::store::{ErasedCounts, StoreError};

/// Erasure routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(erase_user))
}

/// The pseudonym of a user in the audit log: `sha256:` and the hex digest of the user id. A
/// user id is a random UUID, so the digest cannot be reversed by guessing, yet whoever still
/// knows an id (the learner who asked) can check that its erasure was logged.
pub fn subject(user_id: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(user_id.as_bytes())))
}

/// Query of the erasure: the confirmation.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EraseQuery {
    /// Must repeat the user id: an erasure cannot be undone, so a mistyped or replayed
    /// request without it changes nothing.
    pub confirm: Option<String>,
}

/// What an erasure did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Erased {
    /// The pseudonym the audit entry uses for the erased user.
    pub subject: String,
    /// Rows removed (or pseudonymised) by kind.
    pub erased: ErasedCounts,
}

/// Erase a user and everything held about them (admins; audited without personal data).
///
/// Removes the user's synced documents (changes and sync states too), enrollment and
/// preference rows, API tokens, sessions, the reports they filed, their log entries, their
/// own browser imports and the user row; closes their devices' connections on every instance.
/// Needs `?confirm=<the same id>`; without it nothing changes (400).
#[utoipa::path(
    delete, path = "/api/admin/users/{id}", tag = "admin",
    params(("id" = String, Path, description = "User id"), EraseQuery),
    responses(
        (status = 200, body = Erased),
        (status = 400, description = "Missing or wrong confirmation", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Admins cannot erase themselves", body = ErrorBody),
        (status = 422, body = ErrorBody)
    )
)]
async fn erase_user(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(user_id): Path<String>,
    Query(q): Query<EraseQuery>,
) -> ApiResult<Json<Erased>> {
    if q.confirm.as_deref() != Some(user_id.as_str()) {
        return Err(ApiError::BadRequest(
            "erasing a user cannot be undone: repeat the user id as ?confirm=<id>".into(),
        ));
    }
    if user_id == admin.id() {
        return Err(ApiError::Conflict("admins cannot erase themselves".into()));
    }
    if state.store.user(&user_id).await?.is_none() {
        return Err(ApiError::NotFound("user"));
    }
    // Close the devices first so that no change of theirs is in flight while the rows go,
    // and again after (in case one reconnected in between; it cannot any more).
    disconnect_everywhere(&state, &user_id).await;
    let subject = subject(&user_id);
    let mut attempt = 1;
    let erased = loop {
        match state
            .store
            .erase_user(&user_id, &subject, Some(admin.id()), now_ms())
            .await
        {
            // The devices just closed persist their sync states; on PostgreSQL those inserts
            // can deadlock with the deletion of the same documents. The database aborted the
            // whole erasure, so running it again is safe.
            Err(e) if attempt < 5 && is_transient(&e) => {
                tracing::debug!(error = %e, attempt, "erasure aborted by the database; retrying");
                attempt += 1;
            }
            result => break result?.ok_or(ApiError::NotFound("user"))?,
        }
    };
    disconnect_everywhere(&state, &user_id).await;
    tracing::info!(%subject, "user erased");
    Ok(Json(Erased { subject, erased }))
}

/// A deadlock or serialization failure: the transaction was rolled back and may be retried.
fn is_transient(e: &StoreError) -> bool {
    matches!(e, StoreError::Database(sqlx::Error::Database(db))
        if db.code().is_some_and(|c| c == "40P01" || c == "40001"))
}

/// Closes the user's connections on this instance and tells the other instances to do the
/// same (PostgreSQL `NOTIFY`; a no-op on SQLite, which has one instance).
async fn disconnect_everywhere(state: &AppState, user_id: &str) {
    state.sync.disconnect_user(user_id, "account erased");
    if let Err(e) = state
        .store
        .broadcast(&format!("disconnect\t{user_id}"))
        .await
    {
        tracing::warn!(error = %e, "other instances not told to close an erased user's devices");
    }
}

#[cfg(test)]
mod tests {
    use super::subject;

    #[test]
    fn subject_is_a_stable_digest_without_the_id() {
        let id = "7f1e2d3c-0000-4000-8000-000000000001";
        assert_eq!(subject(id), subject(id));
        assert_ne!(subject(id), subject("another"));
        assert!(!subject(id).contains(id));
        assert_eq!(subject(id).len(), "sha256:".len() + 64);
    }
}
