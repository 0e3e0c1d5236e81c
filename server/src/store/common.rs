//! The queries both backends share. `impl_store!` expands to the full `Store` implementation
//! for one backend; the few backend-specific pieces are inherent items of the store type:
//! `BACKEND`, `FOR_UPDATE` (row locks, empty on SQLite, which has one writer), `BEGIN_WRITE`
//! (how a write transaction starts), `writes()` (the pool writes go through: on SQLite, one
//! connection), `migrator()`,
//! `push_search()` and `search_plan()` (full-text search and the plan for it) and
//! `notify()` (cross-instance fan-out).

/// Upper bound of documents per user: protects the server from a client creating documents
/// in a loop (a real user has a few hundred at most).
pub(crate) const MAX_DOCS_PER_USER: i64 = 5_000;

macro_rules! impl_store {
    ($store:ty, $db:ty) => {
        use async_trait::async_trait;
        use automerge::ReadDoc as _;
        use serde_json::Value as Json;
        use sqlx::{QueryBuilder, Row};
        use sync_core::docs::compaction::Folded;
        use sync_core::docs::projection::Projection;

        use crate::model::*;
        use crate::store::common::MAX_DOCS_PER_USER;
        use crate::store::*;

        type DbRow = <$db as sqlx::Database>::Row;

        fn map_err(e: sqlx::Error) -> StoreError {
            if let sqlx::Error::Database(db) = &e {
                if db.is_unique_violation() {
                    return StoreError::Conflict(db.message().to_string());
                }
                // SQLSTATE class 22, "data exception": a value the database cannot hold (a NUL
                // character in text, a number out of range). The input is at fault, not the
                // server; the database's own text stays in the logs.
                if db.code().is_some_and(|c| c.starts_with("22")) {
                    tracing::debug!(error = %db, "value refused by the database");
                    return StoreError::Invalid("a value in the request cannot be stored (for example a NUL character)".into());
                }
            }
            StoreError::Database(e)
        }

        fn json_text(v: &Json) -> String {
            serde_json::to_string(v).unwrap_or_else(|_| "null".into())
        }

        fn parse_json(text: &str, what: &str) -> StoreResult<Json> {
            serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
        }

        fn ts(v: Option<i64>) -> Option<Timestamp> {
            v.map(Timestamp)
        }

        fn enum_col<T>(text: &str, parse: fn(&str) -> Option<T>, what: &str) -> StoreResult<T> {
            parse(text).ok_or_else(|| StoreError::Corrupt(format!("{what} {text:?}")))
        }

        const USER_COLS: &str = "id, email, display_name, password_hash, role, legacy_id, doc_seed, \
            sync_epoch, disabled, created_at";

        fn user_row(row: &DbRow) -> StoreResult<UserRecord> {
            let seed: Vec<u8> = row.try_get("doc_seed")?;
            let doc_seed: [u8; 16] = seed
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::Corrupt("users.doc_seed is not 16 bytes".into()))?;
            let password_hash: Option<String> = row.try_get("password_hash")?;
            Ok(UserRecord {
                user: User {
                    id: row.try_get("id")?,
                    email: row.try_get("email")?,
                    display_name: row.try_get("display_name")?,
                    role: enum_col(&row.try_get::<String, _>("role")?, Role::parse, "role")?,
                    legacy_id: row.try_get("legacy_id")?,
                    disabled: row.try_get("disabled")?,
                    has_password: password_hash.is_some(),
                    created_at: Timestamp(row.try_get("created_at")?),
                },
                password_hash,
                doc_seed,
                sync_epoch: row.try_get("sync_epoch")?,
            })
        }

        const COURSE_COLS: &str = "id, kind, title, description, category, level, status, author_id, \
            lessons, extra, created_at, updated_at";

        fn course_row(row: &DbRow) -> StoreResult<Course> {
            let lessons: String = row.try_get("lessons")?;
            let extra: String = row.try_get("extra")?;
            Ok(Course {
                id: row.try_get("id")?,
                kind: enum_col(&row.try_get::<String, _>("kind")?, CourseKind::parse, "course kind")?,
                title: row.try_get("title")?,
                description: row.try_get("description")?,
                category: row.try_get("category")?,
                level: row.try_get("level")?,
                status: enum_col(&row.try_get::<String, _>("status")?, CourseStatus::parse, "course status")?,
                author_id: row.try_get("author_id")?,
                lessons: serde_json::from_str(&lessons)
                    .map_err(|e| StoreError::Corrupt(format!("courses.lessons: {e}")))?,
                extra: parse_json(&extra, "courses.extra")?,
                created_at: Timestamp(row.try_get("created_at")?),
                updated_at: Timestamp(row.try_get("updated_at")?),
            })
        }

        const REPORT_COLS: &str = "id, course_id, reporter_id, reason, details, status, note, \
            resolved_by, resolved_at, created_at";

        fn report_row(row: &DbRow) -> StoreResult<Report> {
            Ok(Report {
                id: row.try_get("id")?,
                course_id: row.try_get("course_id")?,
                reporter_id: row.try_get("reporter_id")?,
                reason: row.try_get("reason")?,
                details: row.try_get("details")?,
                status: enum_col(&row.try_get::<String, _>("status")?, ReportStatus::parse, "report status")?,
                note: row.try_get("note")?,
                resolved_by: row.try_get("resolved_by")?,
                resolved_at: ts(row.try_get("resolved_at")?),
                created_at: Timestamp(row.try_get("created_at")?),
            })
        }

        fn log_row(row: &DbRow) -> StoreResult<LogEntry> {
            let context: Option<String> = row.try_get("context")?;
            Ok(LogEntry {
                id: row.try_get("id")?,
                level: enum_col(&row.try_get::<String, _>("level")?, LogLevel::parse, "log level")?,
                source: row.try_get("source")?,
                message: row.try_get("message")?,
                context: context.map(|c| parse_json(&c, "system_logs.context")).transpose()?,
                user_id: row.try_get("user_id")?,
                request_id: row.try_get("request_id")?,
                created_at: Timestamp(row.try_get("created_at")?),
            })
        }

        fn enrollment_row(row: &DbRow) -> StoreResult<Enrollment> {
            let lessons: String = row.try_get("completed_lessons")?;
            Ok(Enrollment {
                course_id: row.try_get("course_id")?,
                status: enum_col(&row.try_get::<String, _>("status")?, EnrollmentStatus::parse, "enrollment status")?,
                enrolled_at: ts(row.try_get("enrolled_at")?),
                progress: row.try_get("progress")?,
                completed_lessons: serde_json::from_str(&lessons)
                    .map_err(|e| StoreError::Corrupt(format!("enrollments.completed_lessons: {e}")))?,
                time_spent_secs: row.try_get("time_spent_secs")?,
                last_activity: ts(row.try_get("last_activity")?),
                attempt: row.try_get("attempt")?,
                completed_at: ts(row.try_get("completed_at")?),
            })
        }

        const RUN_COLS: &str = "id, actor_id, source, label, status, dry_run, dumps_total, dumps_done, \
            counts, report, errors, started_at, finished_at";

        fn run_row(row: &DbRow) -> StoreResult<MigrationRun> {
            Ok(MigrationRun {
                id: row.try_get("id")?,
                actor_id: row.try_get("actor_id")?,
                source: enum_col(&row.try_get::<String, _>("source")?, RunSource::parse, "run source")?,
                label: row.try_get("label")?,
                status: enum_col(&row.try_get::<String, _>("status")?, RunStatus::parse, "run status")?,
                dry_run: row.try_get("dry_run")?,
                dumps_total: row.try_get("dumps_total")?,
                dumps_done: row.try_get("dumps_done")?,
                counts: parse_json(&row.try_get::<String, _>("counts")?, "migration_runs.counts")?,
                report: parse_json(&row.try_get::<String, _>("report")?, "migration_runs.report")?,
                errors: parse_json(&row.try_get::<String, _>("errors")?, "migration_runs.errors")?,
                started_at: Timestamp(row.try_get("started_at")?),
                finished_at: ts(row.try_get("finished_at")?),
            })
        }

        fn device_row(row: &DbRow) -> StoreResult<Device> {
            Ok(Device {
                conn_id: row.try_get("conn_id")?,
                instance_id: row.try_get("instance_id")?,
                user_id: row.try_get("user_id")?,
                peer_id: row.try_get("peer_id")?,
                remote_addr: row.try_get("remote_addr")?,
                user_agent: row.try_get("user_agent")?,
                connected_at: Timestamp(row.try_get("connected_at")?),
                last_sync_at: ts(row.try_get("last_sync_at")?),
            })
        }

        /// Appends the keyset condition for a descending (time, id) order.
        fn push_desc_cursor(qb: &mut QueryBuilder<'_, $db>, time_col: &str, id_col: &str, cursor: &Option<String>) -> StoreResult<()> {
            if let Some(c) = cursor {
                let c = Cursor::decode(c)?;
                let n = c.n.ok_or_else(|| StoreError::Invalid("cursor does not fit this list".into()))?;
                qb.push(format!(" AND ({time_col}, {id_col}) < (")).push_bind(n).push(", ").push_bind(c.id).push(")");
            }
            Ok(())
        }

        fn next_page<T>(mut items: Vec<T>, limit: i64, cursor_of: impl Fn(&T) -> Cursor) -> Page<T> {
            let next_cursor = if items.len() as i64 > limit {
                items.truncate(limit as usize);
                items.last().map(|last| cursor_of(last).encode())
            } else {
                None
            };
            Page { items, next_cursor }
        }

        /// The catalog query for one page: filters, visibility, cursor, order, and the search
        /// as `plan` says. `terms`: `None` without a search, empty for a search with nothing
        /// searchable in it (no match rather than everything).
        ///
        /// With [`SearchPlan::Matches`], the ORDER BY uses expressions no index provides
        /// (`+ 0`, `|| ''`), so the database finds the few matches first and sorts them. With
        /// [`SearchPlan::WalkFirst`], a subquery takes the first rows in catalog order and says
        /// which match (`walk_hit`); only the matches come back.
        fn catalog_query<'a>(q: &'a CourseQuery, terms: Option<&'a [String]>, plan: Option<SearchPlan>, limit: i64) -> StoreResult<QueryBuilder<'a, $db>> {
            let sort_from_matches = plan == Some(SearchPlan::Matches);
            let (int_key, text_key) = if sort_from_matches { (" + 0", " || ''") } else { ("", "") };
            let order = match q.sort {
                CourseSort::NewestFirst => format!("created_at{int_key} DESC, id DESC"),
                CourseSort::OldestFirst => format!("created_at{int_key} ASC, id ASC"),
                CourseSort::RecentlyUpdated => format!("updated_at{int_key} DESC, id DESC"),
                CourseSort::Title => format!("title{text_key} ASC, id ASC"),
            };
            let walk = match (plan, terms) {
                (Some(SearchPlan::WalkFirst(budget)), Some(terms)) if !terms.is_empty() => Some((budget, terms)),
                _ => None,
            };
            let mut qb = QueryBuilder::<$db>::new(format!("SELECT {COURSE_COLS}"));
            if let Some((_, terms)) = walk {
                qb.push(format!(" FROM (SELECT {COURSE_COLS}, "));
                <$store>::push_search(&mut qb, terms, false);
                qb.push(" AS walk_hit FROM courses WHERE 1 = 1");
            } else {
                qb.push(" FROM courses WHERE 1 = 1");
            }
            match &q.visibility {
                Visibility::Published => {
                    qb.push(" AND status = 'published'");
                }
                Visibility::PublishedOrAuthor(author) => {
                    qb.push(" AND (status = 'published' OR author_id = ").push_bind(author.clone()).push(")");
                }
                Visibility::All => {}
            }
            if let Some(kind) = q.kind {
                qb.push(" AND kind = ").push_bind(kind.as_str());
            }
            if let Some(category) = &q.category {
                qb.push(" AND category = ").push_bind(category.clone());
            }
            if let Some(level) = &q.level {
                qb.push(" AND level = ").push_bind(level.clone());
            }
            if let Some(status) = q.status {
                qb.push(" AND status = ").push_bind(status.as_str());
            }
            if let Some(author) = &q.author {
                qb.push(" AND author_id = ").push_bind(author.clone());
            }
            if walk.is_none() && let Some(terms) = terms {
                if terms.is_empty() {
                    qb.push(" AND 1 = 0");
                } else {
                    qb.push(" AND ");
                    <$store>::push_search(&mut qb, terms, sort_from_matches);
                }
            }
            if let Some(c) = q.cursor.as_deref().map(Cursor::decode).transpose()? {
                let bad_cursor = || StoreError::Invalid("cursor does not fit this sort order".into());
                let (columns, direction) = match q.sort {
                    CourseSort::NewestFirst => ("created_at", "<"),
                    CourseSort::OldestFirst => ("created_at", ">"),
                    CourseSort::RecentlyUpdated => ("updated_at", "<"),
                    CourseSort::Title => ("title", ">"),
                };
                qb.push(format!(" AND ({columns}, id) {direction} ("));
                if q.sort == CourseSort::Title {
                    qb.push_bind(c.s.ok_or_else(bad_cursor)?);
                } else {
                    qb.push_bind(c.n.ok_or_else(bad_cursor)?);
                }
                qb.push(", ").push_bind(c.id).push(")");
            }
            qb.push(format!(" ORDER BY {order} LIMIT "));
            match walk {
                Some((budget, _)) => {
                    qb.push_bind(budget)
                        .push(format!(") AS walk WHERE walk_hit ORDER BY {order} LIMIT "))
                        .push_bind(limit + 1);
                }
                None => {
                    qb.push_bind(limit + 1);
                }
            }
            Ok(qb)
        }

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> Backend {
                Self::BACKEND
            }

            async fn migrate(&self) -> StoreResult<()> {
                Self::migrator().run(&self.pool).await?;
                Ok(())
            }

            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await.map_err(map_err)?;
                Ok(())
            }

            async fn meta_get(&self, key: &str) -> StoreResult<Option<String>> {
                let row = sqlx::query("SELECT value FROM server_meta WHERE key = $1")
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                Ok(row.map(|r| r.try_get("value")).transpose()?)
            }

            async fn meta_set(&self, key: &str, value: &str) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO server_meta (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind(key)
                .bind(value)
                .execute(self.writes())
                .await
                .map_err(map_err)?;
                Ok(())
            }

            async fn meta_get_or_insert(&self, key: &str, value: &str) -> StoreResult<String> {
                sqlx::query("INSERT INTO server_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                    .bind(key)
                    .bind(value)
                    .execute(self.writes())
                    .await
                    .map_err(map_err)?;
                self.meta_get(key)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt(format!("server_meta.{key} vanished")))
            }

            async fn create_user(&self, new: &NewUser) -> StoreResult<UserRecord> {
                let row = sqlx::query(&format!(
                    "INSERT INTO users (id, email, display_name, password_hash, role, legacy_id, doc_seed, \
                     sync_epoch, disabled, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 0, FALSE, $8, $8) RETURNING {USER_COLS}"
                ))
                .bind(&new.id)
                .bind(&new.email)
                .bind(&new.display_name)
                .bind(&new.password_hash)
                .bind(new.role.as_str())
                .bind(&new.legacy_id)
                .bind(new.doc_seed.to_vec())
                .bind(new.now)
                .fetch_one(self.writes())
                .await
                .map_err(map_err)?;
                user_row(&row)
            }

            async fn user(&self, id: &str) -> StoreResult<Option<UserRecord>> {
                let row = sqlx::query(&format!("SELECT {USER_COLS} FROM users WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                row.as_ref().map(user_row).transpose()
            }

            async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>> {
                let row = sqlx::query(&format!("SELECT {USER_COLS} FROM users WHERE email = $1"))
                    .bind(email)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                row.as_ref().map(user_row).transpose()
            }

            async fn user_by_legacy_id(&self, legacy_id: &str) -> StoreResult<Option<UserRecord>> {
                let row = sqlx::query(&format!("SELECT {USER_COLS} FROM users WHERE legacy_id = $1"))
                    .bind(legacy_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                row.as_ref().map(user_row).transpose()
            }

            async fn ensure_legacy_user(&self, new: &NewUser) -> StoreResult<(UserRecord, bool)> {
                let legacy = new
                    .legacy_id
                    .as_deref()
                    .ok_or_else(|| StoreError::Invalid("placeholder users need a legacy id".into()))?;
                let inserted = sqlx::query(
                    "INSERT INTO users (id, email, display_name, password_hash, role, legacy_id, doc_seed, \
                     sync_epoch, disabled, created_at, updated_at) \
                     VALUES ($1, NULL, $2, NULL, $3, $4, $5, 0, FALSE, $6, $6) ON CONFLICT (legacy_id) DO NOTHING",
                )
                .bind(&new.id)
                .bind(&new.display_name)
                .bind(new.role.as_str())
                .bind(legacy)
                .bind(new.doc_seed.to_vec())
                .bind(new.now)
                .execute(self.writes())
                .await
                .map_err(map_err)?
                .rows_affected()
                    == 1;
                let user = self
                    .user_by_legacy_id(legacy)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt("placeholder user vanished".into()))?;
                Ok((user, inserted))
            }

            async fn users_by_legacy_ids(&self, legacy_ids: &[String]) -> StoreResult<Vec<UserRecord>> {
                let mut found = Vec::new();
                for chunk in legacy_ids.chunks(500) {
                    let mut qb = QueryBuilder::<$db>::new(format!("SELECT {USER_COLS} FROM users WHERE legacy_id IN ("));
                    push_bind_list(&mut qb, chunk.iter().cloned());
                    qb.push(")");
                    for row in qb.build().fetch_all(&self.pool).await.map_err(map_err)? {
                        found.push(user_row(&row)?);
                    }
                }
                Ok(found)
            }

            async fn ensure_legacy_users(&self, new: &[NewUser]) -> StoreResult<Vec<(UserRecord, bool)>> {
                if new.iter().any(|n| n.legacy_id.is_none()) {
                    return Err(StoreError::Invalid("placeholder users need a legacy id".into()));
                }
                let mut tx = self.writes().begin_with(Self::BEGIN_WRITE).await.map_err(map_err)?;
                let mut created = std::collections::HashSet::new();
                let mut records = std::collections::HashMap::new();
                for chunk in new.chunks(BIND_CHUNK / 6) {
                    let mut qb = QueryBuilder::<$db>::new(
                        "INSERT INTO users (id, email, display_name, password_hash, role, legacy_id, doc_seed, \
                         sync_epoch, disabled, created_at, updated_at) ",
                    );
                    qb.push_values(chunk, |mut b, n| {
                        b.push_bind(n.id.clone())
                            .push("NULL")
                            .push_bind(n.display_name.clone())
                            .push("NULL")
                            .push_bind(n.role.as_str())
                            .push_bind(n.legacy_id.clone())
                            .push_bind(n.doc_seed.to_vec())
                            .push("0")
                            .push("FALSE")
                            .push_bind(n.now)
                            .push_bind(n.now);
                    });
                    qb.push(" ON CONFLICT (legacy_id) DO NOTHING RETURNING id");
                    for row in qb.build().fetch_all(&mut *tx).await.map_err(map_err)? {
                        created.insert(row.try_get::<String, _>("id")?);
                    }
                    let mut qb = QueryBuilder::<$db>::new(format!("SELECT {USER_COLS} FROM users WHERE legacy_id IN ("));
                    push_bind_list(&mut qb, chunk.iter().map(|n| n.legacy_id.clone()));
                    qb.push(")");
                    for row in qb.build().fetch_all(&mut *tx).await.map_err(map_err)? {
                        let user = user_row(&row)?;
                        records.insert(user.user.legacy_id.clone().unwrap_or_default(), user);
                    }
                }
                tx.commit().await.map_err(map_err)?;
                new.iter()
                    .map(|n| {
                        let legacy = n.legacy_id.clone().unwrap_or_default();
                        let user = records
                            .get(&legacy)
                            .cloned()
                            .ok_or_else(|| StoreError::Corrupt("placeholder user vanished".into()))?;
                        let was_created = created.contains(&user.user.id);
                        Ok((user, was_created))
                    })
                    .collect()
            }

            async fn list_users(&self, query: &UserQuery) -> StoreResult<Page<UserRecord>> {
                let limit = page_size(query.limit);
                let mut qb = QueryBuilder::<$db>::new(format!("SELECT {USER_COLS} FROM users WHERE 1 = 1"));
                if let Some(role) = query.role {
                    qb.push(" AND role = ").push_bind(role.as_str());
                }
                if let Some(q) = query.q.as_deref().filter(|q| !q.is_empty()) {
                    let pattern = format!("%{}%", q.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
                    qb.push(" AND (LOWER(COALESCE(email, '')) LIKE ")
                        .push_bind(pattern.clone())
                        .push(" ESCAPE '\\' OR LOWER(display_name) LIKE ")
                        .push_bind(pattern)
                        .push(" ESCAPE '\\')");
                }
                push_desc_cursor(&mut qb, "created_at", "id", &query.cursor)?;
                qb.push(" ORDER BY created_at DESC, id DESC LIMIT ").push_bind(limit + 1);
                let rows = qb.build().fetch_all(&self.pool).await.map_err(map_err)?;
                let items = rows.iter().map(user_row).collect::<StoreResult<Vec<_>>>()?;
                Ok(next_page(items, limit, |u| Cursor { n: Some(u.user.created_at.0), s: None, id: u.user.id.clone() }))
            }

            async fn update_user(&self, id: &str, patch: &UserPatch, now: i64) -> StoreResult<UserRecord> {
                let row = sqlx::query(&format!(
                    "UPDATE users SET role = COALESCE($2, role), disabled = COALESCE($3, disabled), \
                     display_name = COALESCE($4, display_name), email = COALESCE($5, email), \
                     password_hash = COALESCE($6, password_hash), updated_at = $7 \
                     WHERE id = $1 RETURNING {USER_COLS}"
                ))
                .bind(id)
                .bind(patch.role.map(|r| r.as_str()))
                .bind(patch.disabled)
                .bind(&patch.display_name)
                .bind(&patch.email)
                .bind(&patch.password_hash)
                .bind(now)
                .fetch_optional(self.writes())
                .await
                .map_err(map_err)?;
                row.as_ref().map(user_row).transpose()?.ok_or(StoreError::NotFound)
            }

            async fn delete_user(&self, id: &str) -> StoreResult<bool> {
                let mut tx = self.writes().begin_with(Self::BEGIN_WRITE).await.map_err(map_err)?;
                for sql in [
                    "DELETE FROM devices WHERE user_id = $1",
                    "DELETE FROM system_logs WHERE user_id = $1",
                ] {
                    sqlx::query(sql).bind(id).execute(&mut *tx).await.map_err(map_err)?;
                }
                let gone = sqlx::query("DELETE FROM users WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?
                    .rows_affected()
                    == 1;
                tx.commit().await.map_err(map_err)?;
                Ok(gone)
            }

            async fn erase_user(&self, user_id: &str, subject: &str, actor_id: Option<&str>, now: i64) -> StoreResult<Option<ErasedCounts>> {
                let mut tx = self.writes().begin_with(Self::BEGIN_WRITE).await.map_err(map_err)?;
                let exists = sqlx::query(&format!("SELECT id FROM users WHERE id = $1 {}", Self::FOR_UPDATE))
                    .bind(user_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map_err)?
                    .is_some();
                if !exists {
                    return Ok(None);
                }
                let document_changes: i64 = sqlx::query(
                    "SELECT COUNT(*) AS n FROM document_changes WHERE doc_id IN (SELECT id FROM documents WHERE owner_id = $1)",
                )
                .bind(user_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(map_err)?
                .try_get("n")?;
                // Each statement deletes one kind of row; the count is what the admin sees.
                let mut counts = ErasedCounts { document_changes, ..ErasedCounts::default() };
                for (sql, count) in [
                    ("DELETE FROM documents WHERE owner_id = $1", &mut counts.documents),
                    ("DELETE FROM enrollments WHERE user_id = $1", &mut counts.enrollments),
                    ("DELETE FROM user_preferences WHERE user_id = $1", &mut counts.preferences),
                    ("DELETE FROM api_tokens WHERE user_id = $1", &mut counts.api_tokens),
                    ("DELETE FROM course_reports WHERE reporter_id = $1", &mut counts.reports),
                    ("DELETE FROM system_logs WHERE user_id = $1 AND source <> 'audit'", &mut counts.logs),
                    ("DELETE FROM migration_runs WHERE actor_id = $1 AND source = 'client'", &mut counts.import_runs),
                    ("DELETE FROM devices WHERE user_id = $1", &mut counts.devices),
                ] {
                    let n = sqlx::query(sql).bind(user_id).execute(&mut *tx).await.map_err(map_err)?.rows_affected();
                    *count = i64::try_from(n).unwrap_or(i64::MAX);
                }
                let n = sqlx::query(Self::DELETE_SESSIONS_CONTAINING)
                    .bind(session_needle(user_id))
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?
                    .rows_affected();
                counts.sessions = i64::try_from(n).unwrap_or(i64::MAX);
                counts.audit_entries_pseudonymised = i64::try_from(
                    sqlx::query("UPDATE system_logs SET user_id = $2 WHERE user_id = $1")
                        .bind(user_id)
                        .bind(subject)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?
                        .rows_affected(),
                )
                .unwrap_or(i64::MAX);
                sqlx::query("DELETE FROM users WHERE id = $1").bind(user_id).execute(&mut *tx).await.map_err(map_err)?;
                let context = serde_json::json!({ "subject": subject, "erased": counts });
                sqlx::query(
                    "INSERT INTO system_logs (level, source, message, context, user_id, request_id, legacy_key, created_at) \
                     VALUES ('info', 'audit', 'user erased', $1, $2, NULL, NULL, $3)",
                )
                .bind(json_text(&context))
                .bind(actor_id)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(Some(counts))
            }

            async fn bump_sync_epoch(&self, user_id: Option<&str>) -> StoreResult<i64> {
                match user_id {
                    Some(id) => {
                        let row = sqlx::query("UPDATE users SET sync_epoch = sync_epoch + 1 WHERE id = $1 RETURNING sync_epoch")
                            .bind(id)
                            .fetch_optional(self.writes())
                            .await
                            .map_err(map_err)?
                            .ok_or(StoreError::NotFound)?;
                        Ok(row.try_get("sync_epoch")?)
                    }
                    None => {
                        let mut tx = self.writes().begin_with(Self::BEGIN_WRITE).await.map_err(map_err)?;
                        sqlx::query(
                            "INSERT INTO server_meta (key, value) VALUES ('global_sync_epoch', '1') \
                             ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(server_meta.value AS BIGINT) + 1 AS TEXT)",
                        )
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                        let row = sqlx::query("SELECT value FROM server_meta WHERE key = 'global_sync_epoch'")
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(map_err)?;
                        tx.commit().await.map_err(map_err)?;
                        let value: String = row.try_get("value")?;
                        value.parse().map_err(|_| StoreError::Corrupt("global_sync_epoch".into()))
                    }
                }
            }

            async fn global_sync_epoch(&self) -> StoreResult<i64> {
                Ok(self
                    .meta_get("global_sync_epoch")
                    .await?
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0))
            }

            async fn create_token(&self, token: &NewToken) -> StoreResult<ApiToken> {
                sqlx::query(
                    "INSERT INTO api_tokens (id, user_id, name, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&token.id)
                .bind(&token.user_id)
                .bind(&token.name)
                .bind(&token.token_hash)
                .bind(token.now)
                .execute(self.writes())
                .await
                .map_err(map_err)?;
                Ok(ApiToken {
                    id: token.id.clone(),
                    name: token.name.clone(),
                    created_at: Timestamp(token.now),
                    last_used_at: None,
                    revoked_at: None,
                })
            }

            async fn token_user(&self, token_hash: &str, now: i64) -> StoreResult<Option<UserRecord>> {
                let row = sqlx::query(&format!(
                    "SELECT {}, t.last_used_at AS token_last_used_at FROM users u JOIN api_tokens t ON t.user_id = u.id \
                     WHERE t.token_hash = $1 AND t.revoked_at IS NULL",
                    USER_COLS.split(", ").map(|c| format!("u.{c}")).collect::<Vec<_>>().join(", ")
                ))
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(map_err)?;
                let Some(row) = row else {
                    return Ok(None);
                };
                // Record the use at most once a minute: a bearer request must not cost a write
                // (on SQLite it would wait behind every write queued before it).
                let last_used: Option<i64> = row.try_get("token_last_used_at")?;
                if last_used.is_none_or(|at| at < now - 60_000) {
                    sqlx::query(
                        "UPDATE api_tokens SET last_used_at = $2 WHERE token_hash = $1 AND revoked_at IS NULL \
                         AND (last_used_at IS NULL OR last_used_at < $3)",
                    )
                    .bind(token_hash)
                    .bind(now)
                    .bind(now - 60_000)
                    .execute(self.writes())
                    .await
                    .map_err(map_err)?;
                }
                user_row(&row).map(Some)
            }

            async fn list_tokens(&self, user_id: &str) -> StoreResult<Vec<ApiToken>> {
                let rows = sqlx::query(
                    "SELECT id, name, created_at, last_used_at, revoked_at FROM api_tokens \
                     WHERE user_id = $1 ORDER BY created_at DESC, id DESC",
                )
                .bind(user_id)
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
                rows.iter()
                    .map(|r| {
                        Ok(ApiToken {
                            id: r.try_get("id")?,
                            name: r.try_get("name")?,
                            created_at: Timestamp(r.try_get("created_at")?),
                            last_used_at: ts(r.try_get("last_used_at")?),
                            revoked_at: ts(r.try_get("revoked_at")?),
                        })
                    })
                    .collect()
            }

            async fn revoke_token(&self, user_id: &str, token_id: &str, now: i64) -> StoreResult<bool> {
                Ok(sqlx::query(
                    "UPDATE api_tokens SET revoked_at = $3 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
                )
                .bind(token_id)
                .bind(user_id)
                .bind(now)
                .execute(self.writes())
                .await
                .map_err(map_err)?
                .rows_affected()
                    == 1)
            }

            async fn create_course(&self, c: &NewCourse) -> StoreResult<Course> {
                let lessons = serde_json::to_string(&c.lessons).unwrap_or_else(|_| "[]".into());
                let row = sqlx::query(&format!(
                    "INSERT INTO courses (id, kind, title, description, category, level, status, author_id, \
                     lessons, extra, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING {COURSE_COLS}"
                ))
                .bind(&c.id)
                .bind(c.kind.as_str())
                .bind(&c.title)
                .bind(&c.description)
                .bind(&c.category)
                .bind(&c.level)
                .bind(c.status.as_str())
                .bind(&c.author_id)
                .bind(lessons)
                .bind(json_text(&c.extra))
                .bind(c.created_at)
                .bind(c.now)
                .fetch_one(self.writes())
                .await
                .map_err(map_err)?;
                course_row(&row)
            }

            async fn insert_course_if_absent(&self, c: &NewCourse) -> StoreResult<bool> {
                let lessons = serde_json::to_string(&c.lessons).unwrap_or_else(|_| "[]".into());
                Ok(sqlx::query(
                    "INSERT INTO courses (id, kind, title, description, category, level, status, author_id, \
                     lessons, extra, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (id) DO NOTHING",
                )
                .bind(&c.id)
                .bind(c.kind.as_str())
                .bind(&c.title)
                .bind(&c.description)
                .bind(&c.category)
                .bind(&c.level)
                .bind(c.status.as_str())
                .bind(&c.author_id)
                .bind(lessons)
                .bind(json_text(&c.extra))
                .bind(c.created_at)
                .bind(c.now)
                .execute(self.writes())
                .await
                .map_err(map_err)?
                .rows_affected()
                    == 1)
            }

            async fn course(&self, id: &str) -> StoreResult<Option<Course>> {
                let row = sqlx::query(&format!("SELECT {COURSE_COLS} FROM courses WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                row.as_ref().map(course_row).transpose()
            }

            async fn update_course(&self, id: &str, p: &CoursePatch, now: i64) -> StoreResult<Option<Course>> {
                let lessons = p.lessons.as_ref().map(|l| serde_json::to_string(l).unwrap_or_else(|_| "[]".into()));
                let row = sqlx::query(&format!(
                    "UPDATE courses SET title = COALESCE($2, title), description = COALESCE($3, description), \
                     category = CASE WHEN $4 THEN $5 ELSE category END, \
                     level = CASE WHEN $6 THEN $7 ELSE level END, \
                     status = COALESCE($8, status), lessons = COALESCE($9, lessons), updated_at = $10 \
                     WHERE id = $1 RETURNING {COURSE_COLS}"
                ))
                .bind(id)
                .bind(&p.title)
                .bind(&p.description)
                .bind(p.category.is_some())
                .bind(p.category.clone().flatten())
                .bind(p.level.is_some())
                .bind(p.level.clone().flatten())
                .bind(p.status.map(|s| s.as_str()))
                .bind(lessons)
                .bind(now)
                .fetch_optional(self.writes())
                .await
                .map_err(map_err)?;
                row.as_ref().map(course_row).transpose()
            }

            async fn list_courses(&self, q: &CourseQuery) -> StoreResult<Page<Course>> {
                let limit = page_size(q.limit);
                let terms = q.q.as_deref().map(search_terms);
                let plan = match &terms {
                    Some(t) if !t.is_empty() => Some(self.search_plan(t, limit).await?),
                    _ => None,
                };
                let rows = match plan {
                    Some(SearchPlan::WalkFirst(_)) => {
                        // Both queries on one connection: one checkout, one warm statement cache.
                        let mut conn = self.pool.acquire().await.map_err(map_err)?;
                        let walked = catalog_query(q, terms.as_deref(), plan, limit)?
                            .build()
                            .fetch_all(&mut *conn)
                            .await
                            .map_err(map_err)?;
                        // A short page may only mean that the matches lie beyond the walk.
                        // (When the walk reached the end of the catalog, the lookup finds the
                        // same page again: only short catalogs and last pages pay for it.
                        // Telling the two apart in the walk, by numbering its rows, cost more
                        // than the lookup saves.)
                        if walked.len() as i64 > limit {
                            walked
                        } else {
                            catalog_query(q, terms.as_deref(), Some(SearchPlan::Matches), limit)?
                                .build()
                                .fetch_all(&mut *conn)
                                .await
                                .map_err(map_err)?
                        }
                    }
                    plan => catalog_query(q, terms.as_deref(), plan, limit)?
                        .build()
                        .fetch_all(&self.pool)
                        .await
                        .map_err(map_err)?,
                };
                let items = rows.iter().map(course_row).collect::<StoreResult<Vec<_>>>()?;
                let sort = q.sort;
                Ok(next_page(items, limit, |c| match sort {
                    CourseSort::NewestFirst | CourseSort::OldestFirst => Cursor { n: Some(c.created_at.0), s: None, id: c.id.clone() },
                    CourseSort::RecentlyUpdated => Cursor { n: Some(c.updated_at.0), s: None, id: c.id.clone() },
                    CourseSort::Title => Cursor { n: None, s: Some(c.title.clone()), id: c.id.clone() },
                }))
            }

            async fn create_report(&self, r: &NewReport) -> StoreResult<Report> {
                let row = sqlx::query(&format!(
                    "INSERT INTO course_reports (id, course_id, reporter_id, reason, details, status, note, \
                     resolved_by, resolved_at, legacy_id, extra, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) RETURNING {REPORT_COLS}"
                ))
                .bind(&r.id)
                .bind(&r.course_id)
                .bind(&r.reporter_id)
                .bind(&r.reason)
                .bind(&r.details)
                .bind(r.status.as_str())
                .bind(&r.note)
                .bind(&r.resolved_by)
                .bind(r.resolved_at)
                .bind(&r.legacy_id)
                .bind(json_text(&r.extra))
                .bind(r.created_at)
                .fetch_one(self.writes())
                .await
                .map_err(map_err)?;
                report_row(&row)
            }

            async fn insert_legacy_rows(&self, reports: &[NewReport], logs: &[NewLog]) -> StoreResult<(Vec<bool>, Vec<bool>)> {
                if reports.is_empty() && logs.is_empty() {
                    return Ok((Vec::new(), Vec::new()));
                }
                let mut tx = self.writes().begin_with(Self::BEGIN_WRITE).await.map_err(map_err)?;
                let mut new_reports = std::collections::HashSet::new();
                for chunk in reports.chunks(BIND_CHUNK / 13) {
                    let mut qb = QueryBuilder::<$db>::new(
                        "INSERT INTO course_reports (id, course_id, reporter_id, reason, details, status, note, \
                         resolved_by, resolved_at, legacy_id, extra, created_at, updated_at) ",
                    );
                    qb.push_values(chunk, |mut b, r| {
                        b.push_bind(r.id.clone())
                            .push_bind(r.course_id.clone())
                            .push_bind(r.reporter_id.clone())
                            .push_bind(r.reason.clone())
                            .push_bind(r.details.clone())
                            .push_bind(r.status.as_str())
                            .push_bind(r.note.clone())
                            .push_bind(r.resolved_by.clone())
                            .push_bind(r.resolved_at)
                            .push_bind(r.legacy_id.clone())
                            .push_bind(json_text(&r.extra))
                            .push_bind(r.created_at)
                            .push_bind(r.created_at);
                    });
                    qb.push(" ON CONFLICT (legacy_id) DO NOTHING RETURNING id");
                    for row in qb.build().fetch_all(&mut *tx).await.map_err(map_err)? {
                        new_reports.insert(row.try_get::<String, _>("id")?);
                    }
                }
                let mut new_logs = std::collections::HashSet::new();
                for chunk in logs.chunks(BIND_CHUNK / 8) {
                    let mut qb = insert_logs_query(chunk);
                    qb.push(" RETURNING legacy_key");
                    for row in qb.build().fetch_all(&mut *tx).await.map_err(map_err)? {
                        if let Some(key) = row.try_get::<Option<String>, _>("legacy_key")? {
                            new_logs.insert(key);
                        }
                    }
                }
                tx.commit().await.map_err(map_err)?;
                // A report is known by its own fresh id. A log entry is known by its legacy key,
                // claimed by the first entry that carries it (a later one with the same key was
                // skipped as a conflict with it); an entry without a key cannot conflict.
                let reports_inserted = reports.iter().map(|r| new_reports.contains(&r.id)).collect();
                let logs_inserted = logs
                    .iter()
                    .map(|l| match &l.legacy_key {
                        Some(key) => new_logs.remove(key),
                        None => true,
                    })
                    .collect();
                Ok((reports_inserted, logs_inserted))
            }

            async fn report(&self, id: &str) -> StoreResult<Option<Report>> {
                let row = sqlx::query(&format!("SELECT {REPORT_COLS} FROM course_reports WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                row.as_ref().map(report_row).transpose()
            }

            async fn list_reports(&self, q: &ReportQuery) -> StoreResult<Page<Report>> {
                let limit = page_size(q.limit);
                let mut qb = QueryBuilder::<$db>::new(format!("SELECT {REPORT_COLS} FROM course_reports WHERE 1 = 1"));
                if let Some(status) = q.status {
                    qb.push(" AND status = ").push_bind(status.as_str());
                }
                if let Some(course) = &q.course_id {
                    qb.push(" AND course_id = ").push_bind(course.clone());
                }
                if let Some(reporter) = &q.reporter_id {
                    qb.push(" AND reporter_id = ").push_bind(reporter.clone());
                }
                push_desc_cursor(&mut qb, "created_at", "id", &q.cursor)?;
                qb.push(" ORDER BY created_at DESC, id DESC LIMIT ").push_bind(limit + 1);
                let rows = qb.build().fetch_all(&self.pool).await.map_err(map_err)?;
                let items = rows.iter().map(report_row).collect::<StoreResult<Vec<_>>>()?;
                Ok(next_page(items, limit, |r| Cursor { n: Some(r.created_at.0), s: None, id: r.id.clone() }))
            }

            async fn resolve_report(&self, id: &str, status: ReportStatus, note: Option<&str>, by: &str, now: i64) -> StoreResult<Option<Report>> {
                let row = sqlx::query(&format!(
                    "UPDATE course_reports SET status = $2, note = $3, resolved_by = $4, resolved_at = $5, updated_at = $5 \
                     WHERE id = $1 RETURNING {REPORT_COLS}"
                ))
                .bind(id)
                .bind(status.as_str())
                .bind(note)
                .bind(by)
                .bind(now)
                .fetch_optional(self.writes())
                .await
                .map_err(map_err)?;
                row.as_ref().map(report_row).transpose()
            }

            async fn legacy_rows_present(
                &self,
                report_ids: &[String],
                log_keys: &[String],
            ) -> StoreResult<(Vec<String>, Vec<String>)> {
                let mut found = (Vec::new(), Vec::new());
                for (table, column, keys, out) in [
                    ("course_reports", "legacy_id", report_ids, &mut found.0),
                    ("system_logs", "legacy_key", log_keys, &mut found.1),
                ] {
                    for chunk in keys.chunks(500) {
                        let mut qb = QueryBuilder::<$db>::new(format!("SELECT {column} FROM {table} WHERE {column} IN ("));
                        push_bind_list(&mut qb, chunk.iter().cloned());
                        qb.push(")");
                        for row in qb.build().fetch_all(&self.pool).await.map_err(map_err)? {
                            out.push(row.try_get::<String, _>(0).map_err(map_err)?);
                        }
                    }
                }
                Ok(found)
            }

            async fn insert_logs(&self, logs: &[NewLog]) -> StoreResult<u64> {
                if logs.is_empty() {
                    return Ok(0);
                }
                let mut inserted = 0;
                for chunk in logs.chunks(500) {
                    let mut qb = insert_logs_query(chunk);
                    inserted += qb.build().execute(self.writes()).await.map_err(map_err)?.rows_affected();
                }
                Ok(inserted)
            }

            async fn list_logs(&self, q: &LogQuery) -> StoreResult<Page<LogEntry>> {
                let limit = page_size(q.limit);
                let mut qb = QueryBuilder::<$db>::new(
                    "SELECT id, level, source, message, context, user_id, request_id, created_at FROM system_logs WHERE 1 = 1",
                );
                if let Some(level) = q.level {
                    qb.push(" AND level = ").push_bind(level.as_str());
                }
                if let Some(source) = &q.source {
                    qb.push(" AND source = ").push_bind(source.clone());
                }
                if let Some(user) = &q.user_id {
                    qb.push(" AND user_id = ").push_bind(user.clone());
                }
                if let Some(from) = q.from {
                    qb.push(" AND created_at >= ").push_bind(from);
                }
                if let Some(to) = q.to {
                    qb.push(" AND created_at < ").push_bind(to);
                }
                if let Some(c) = &q.cursor {
                    let c = Cursor::decode(c)?;
                    let n = c.n.ok_or_else(|| StoreError::Invalid("cursor does not fit this list".into()))?;
                    let id: i64 = c.id.parse().map_err(|_| StoreError::Invalid("cursor does not fit this list".into()))?;
                    qb.push(" AND (created_at, id) < (").push_bind(n).push(", ").push_bind(id).push(")");
                }
                qb.push(" ORDER BY created_at DESC, id DESC LIMIT ").push_bind(limit + 1);
                let rows = qb.build().fetch_all(&self.pool).await.map_err(map_err)?;
                let items = rows.iter().map(log_row).collect::<StoreResult<Vec<_>>>()?;
                Ok(next_page(items, limit, |l| Cursor { n: Some(l.created_at.0), s: None, id: l.id.to_string() }))
            }

            async fn preferences(&self, user_id: &str) -> StoreResult<Option<Preferences>> {
                let row = sqlx::query("SELECT theme, language, settings, updated_at FROM user_preferences WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                row.map(|r| {
                    Ok(Preferences {
                        theme: r.try_get("theme")?,
                        language: r.try_get("language")?,
                        settings: parse_json(&r.try_get::<String, _>("settings")?, "user_preferences.settings")?,
                        updated_at: Some(Timestamp(r.try_get("updated_at")?)),
                    })
                })
                .transpose()
            }

            async fn enrollments(&self, user_id: &str) -> StoreResult<Vec<Enrollment>> {
                let rows = sqlx::query(
                    "SELECT course_id, status, enrolled_at, progress, completed_lessons, time_spent_secs, last_activity, \
                     attempt, completed_at FROM enrollments WHERE user_id = $1 ORDER BY course_id",
                )
                .bind(user_id)
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
                rows.iter().map(enrollment_row).collect()
            }

            async fn course_stats(&self, limit: u32) -> StoreResult<Vec<CourseStats>> {
                let rows = sqlx::query(
                    "SELECT e.course_id AS course_id, MAX(c.title) AS title, COUNT(*) AS enrollments, \
                     SUM(CASE WHEN e.status = 'active' THEN 1 ELSE 0 END) AS active, \
                     SUM(CASE WHEN e.status = 'completed' THEN 1 ELSE 0 END) AS completed, \
                     CAST(AVG(CASE WHEN e.status <> 'unenrolled' THEN e.progress END) AS DOUBLE PRECISION) AS average_progress \
                     FROM enrollments e LEFT JOIN courses c ON c.id = e.course_id \
                     GROUP BY e.course_id ORDER BY COUNT(*) DESC, e.course_id LIMIT $1",
                )
                .bind(page_size(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
                rows.iter()
                    .map(|r| {
                        Ok(CourseStats {
                            course_id: r.try_get("course_id")?,
                            title: r.try_get("title")?,
                            enrollments: r.try_get("enrollments")?,
                            active: r.try_get::<Option<i64>, _>("active")?.unwrap_or(0),
                            completed: r.try_get::<Option<i64>, _>("completed")?.unwrap_or(0),
                            average_progress: r.try_get::<Option<f64>, _>("average_progress")?.unwrap_or(0.0),
                        })
                    })
                    .collect()
            }

            async fn daily_enrollments(&self, completions: bool, course_id: Option<&str>, from: i64, to: i64) -> StoreResult<Vec<DailyCount>> {
                let col = if completions { "completed_at" } else { "enrolled_at" };
                let mut qb = QueryBuilder::<$db>::new(format!(
                    "SELECT {col} / 86400000 AS day, COUNT(*) AS n FROM enrollments WHERE {col} >= "
                ));
                qb.push_bind(from).push(format!(" AND {col} < ")).push_bind(to);
                if let Some(c) = course_id {
                    qb.push(" AND course_id = ").push_bind(c.to_string());
                }
                qb.push(format!(" GROUP BY {col} / 86400000 ORDER BY 1"));
                let rows = qb.build().fetch_all(&self.pool).await.map_err(map_err)?;
                rows.iter().map(daily_row).collect()
            }

            async fn daily_active_users(&self, from: i64, to: i64) -> StoreResult<Vec<DailyCount>> {
                let rows = sqlx::query(
                    "SELECT last_activity / 86400000 AS day, COUNT(DISTINCT user_id) AS n FROM enrollments \
                     WHERE last_activity >= $1 AND last_activity < $2 GROUP BY last_activity / 86400000 ORDER BY 1",
                )
                .bind(from)
                .bind(to)
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
                rows.iter().map(daily_row).collect()
            }

            async fn save_run(&self, run: &MigrationRun) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO migration_runs (id, actor_id, source, label, status, dry_run, dumps_total, dumps_done, \
                     counts, report, errors, started_at, finished_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                     ON CONFLICT (id) DO UPDATE SET status = excluded.status, dumps_total = excluded.dumps_total, \
                     dumps_done = excluded.dumps_done, counts = excluded.counts, report = excluded.report, \
                     errors = excluded.errors, finished_at = excluded.finished_at",
                )
                .bind(&run.id)
                .bind(&run.actor_id)
                .bind(run.source.as_str())
                .bind(&run.label)
                .bind(run.status.as_str())
                .bind(run.dry_run)
                .bind(run.dumps_total)
                .bind(run.dumps_done)
                .bind(json_text(&run.counts))
                .bind(json_text(&run.report))
                .bind(json_text(&run.errors))
                .bind(run.started_at.0)
                .bind(run.finished_at.map(|t| t.0))
                .execute(self.writes())
                .await
                .map_err(map_err)?;
                Ok(())
            }

            async fn run(&self, id: &str) -> StoreResult<Option<MigrationRun>> {
                let row = sqlx::query(&format!("SELECT {RUN_COLS} FROM migration_runs WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                row.as_ref().map(run_row).transpose()
            }

            async fn list_runs(&self, cursor: Option<&str>, limit: u32) -> StoreResult<Page<MigrationRun>> {
                let limit = page_size(limit);
                let mut qb = QueryBuilder::<$db>::new(format!("SELECT {RUN_COLS} FROM migration_runs WHERE 1 = 1"));
                push_desc_cursor(&mut qb, "started_at", "id", &cursor.map(str::to_string))?;
                qb.push(" ORDER BY started_at DESC, id DESC LIMIT ").push_bind(limit + 1);
                let rows = qb.build().fetch_all(&self.pool).await.map_err(map_err)?;
                let items = rows.iter().map(run_row).collect::<StoreResult<Vec<_>>>()?;
                Ok(next_page(items, limit, |r| Cursor { n: Some(r.started_at.0), s: None, id: r.id.clone() }))
            }

            async fn runs_by_actor(&self, actor_id: &str) -> StoreResult<Vec<MigrationRun>> {
                let rows = sqlx::query(&format!("SELECT {RUN_COLS} FROM migration_runs WHERE actor_id = $1 ORDER BY started_at DESC, id DESC"))
                    .bind(actor_id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                rows.iter().map(run_row).collect()
            }

            async fn load_document(&self, id: &str) -> StoreResult<Option<StoredDocument>> {
                Ok(self.load_documents(&[id.to_string()]).await?.pop().flatten())
            }

            async fn load_documents(&self, ids: &[String]) -> StoreResult<Vec<Option<StoredDocument>>> {
                let mut found: std::collections::HashMap<String, StoredDocument> = std::collections::HashMap::new();
                for chunk in ids.chunks(BIND_CHUNK / 2) {
                    // One statement, so one snapshot of the database: read apart, a compaction
                    // committing between the snapshot and the change rows would hide the
                    // changes it folded (the old snapshot lacks them, their rows are gone), and
                    // the hub would reload a document missing changes it had acknowledged.
                    let mut qb = QueryBuilder::<$db>::new(
                        "SELECT CAST(0 AS BIGINT) AS part, CAST(0 AS BIGINT) AS seq, id AS doc, owner_id, kind, course_id, snapshot AS data \
                           FROM documents WHERE id IN (",
                    );
                    push_bind_list(&mut qb, chunk.iter().cloned());
                    qb.push(
                        ") UNION ALL \
                         SELECT CAST(1 AS BIGINT), seq, doc_id, NULL, NULL, NULL, data \
                           FROM document_changes WHERE doc_id IN (",
                    );
                    push_bind_list(&mut qb, chunk.iter().cloned());
                    qb.push(") ORDER BY part, seq");
                    for r in qb.build().fetch_all(&self.pool).await.map_err(map_err)? {
                        let doc: String = r.try_get("doc")?;
                        let data: Option<Vec<u8>> = r.try_get("data")?;
                        if r.try_get::<i64, _>("part")? == 0 {
                            found.insert(doc, StoredDocument {
                                owner_id: r.try_get("owner_id")?,
                                kind: r.try_get("kind")?,
                                course_id: r.try_get("course_id")?,
                                chunks: data.into_iter().collect(),
                                sync_states: Vec::new(),
                            });
                        } else if let (Some(stored), Some(data)) = (found.get_mut(&doc), data) {
                            // (Change rows cannot outlive their document: foreign key.)
                            stored.chunks.push(data);
                        }
                    }
                }
                let present: Vec<String> = found.keys().cloned().collect();
                for chunk in present.chunks(BIND_CHUNK) {
                    let mut qb = QueryBuilder::<$db>::new("SELECT doc_id, peer_storage_id, state FROM sync_states WHERE doc_id IN (");
                    push_bind_list(&mut qb, chunk.iter().cloned());
                    qb.push(")");
                    for r in qb.build().fetch_all(&self.pool).await.map_err(map_err)? {
                        let doc: String = r.try_get("doc_id")?;
                        if let Some(stored) = found.get_mut(&doc) {
                            stored.sync_states.push((r.try_get("peer_storage_id")?, r.try_get("state")?));
                        }
                    }
                }
                Ok(ids.iter().map(|id| found.get(id).cloned()).collect())
            }

            async fn store_writes(&self, writes: &[DocWrite], now: i64) -> StoreResult<Vec<WriteOutcome>> {
                // A fixed number of statements per group commit, whatever its size: a round
                // trip per write (the update, the change row, the projection) cost more than
                // the rows themselves, and the writer's commit is the server's narrowest pipe.
                if writes.is_empty() {
                    return Ok(Vec::new());
                }
                let mut tx = self.writes().begin_with(Self::BEGIN_WRITE).await.map_err(map_err)?;
                // The batch per (document, writer): the rows and bytes it appends, first-seen order.
                let mut groups: Vec<WriteGroup> = Vec::new();
                let mut group_of: Vec<usize> = Vec::with_capacity(writes.len());
                {
                    let mut index: std::collections::HashMap<(&str, &str), usize> = std::collections::HashMap::new();
                    for w in writes {
                        let g = *index.entry((w.doc_id.as_str(), w.owner_id.as_str())).or_insert_with(|| {
                            groups.push(WriteGroup { write: w, rows: 0, bytes: 0, pending: None, rejected: None });
                            groups.len() - 1
                        });
                        groups[g].rows += 1;
                        groups[g].bytes += w.changes.len() as i64;
                        group_of.push(g);
                    }
                }

                // 1. The common case in one statement: the document exists and is the writer's
                //    (the update locks its row, as the compactor expects). Documents the writer
                //    believes new skip it and the owner lookup below: they are inserted first,
                //    and those that turn out to exist are counted then, like a race.
                let known: Vec<usize> = (0..groups.len()).filter(|&g| !groups[g].write.likely_new).collect();
                count_writes(&mut tx, &mut groups, &known, now).await?;

                // 2. The rest: someone else's document, or a new one.
                let rest: Vec<usize> = (0..groups.len()).filter(|&g| groups[g].pending.is_none()).collect();
                if !rest.is_empty() {
                    let mut owners: std::collections::HashMap<String, String> = std::collections::HashMap::new();
                    let ids: Vec<&str> = rest
                        .iter()
                        .filter(|&&g| !groups[g].write.likely_new)
                        .map(|&g| groups[g].write.doc_id.as_str())
                        .collect();
                    for chunk in ids.chunks(BIND_CHUNK) {
                        let mut qb = QueryBuilder::<$db>::new("SELECT id, owner_id FROM documents WHERE id IN (");
                        push_bind_list(&mut qb, chunk.iter().map(|id| id.to_string()));
                        qb.push(") ").push(Self::FOR_UPDATE);
                        for r in qb.build().fetch_all(&mut *tx).await.map_err(map_err)? {
                            owners.insert(r.try_get("id")?, r.try_get("owner_id")?);
                        }
                    }
                    // A new document belongs to the first writer of the batch to name it.
                    let mut creators: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
                    let mut create: Vec<usize> = Vec::new();
                    // Documents another transaction created after step 1 read (its own
                    // snapshot); the writer's own are counted below like any other.
                    let mut raced: Vec<usize> = Vec::new();
                    // A document believed new was not looked up, so a refusal decided before the
                    // insert may be wrong for it (the row may exist and be the writer's): it is
                    // counted with the races instead, and refused for this reason only if that
                    // finds no row of the writer's either.
                    let mut refused_unseen: std::collections::HashMap<usize, String> = std::collections::HashMap::new();
                    for &g in &rest {
                        let w = groups[g].write;
                        match owners.get(&w.doc_id) {
                            Some(owner) if *owner == w.owner_id => raced.push(g),
                            Some(_) => groups[g].rejected = Some("document belongs to another user".into()),
                            None => match creators.get(w.doc_id.as_str()) {
                                Some(owner) if *owner != w.owner_id && w.likely_new => {
                                    refused_unseen.insert(g, "document belongs to another user".into());
                                    raced.push(g);
                                }
                                Some(owner) if *owner != w.owner_id => {
                                    groups[g].rejected = Some("document belongs to another user".into());
                                }
                                _ => {
                                    creators.insert(&w.doc_id, &w.owner_id);
                                    create.push(g);
                                }
                            },
                        }
                    }
                    // The creators must exist and stay under their document limit.
                    let mut counts: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
                    let creator_ids: Vec<String> = create
                        .iter()
                        .map(|&g| groups[g].write.owner_id.clone())
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    for chunk in creator_ids.chunks(BIND_CHUNK) {
                        let mut qb = QueryBuilder::<$db>::new(
                            "SELECT id, (SELECT COUNT(*) FROM documents WHERE documents.owner_id = users.id) AS n FROM users WHERE id IN (",
                        );
                        push_bind_list(&mut qb, chunk.iter().cloned());
                        qb.push(")");
                        for r in qb.build().fetch_all(&mut *tx).await.map_err(map_err)? {
                            counts.insert(r.try_get("id")?, r.try_get("n")?);
                        }
                    }
                    let mut insert: Vec<usize> = Vec::new();
                    for g in create {
                        let owner = &groups[g].write.owner_id;
                        let refusal = match counts.get_mut(owner) {
                            None => "the owner no longer exists".to_string(),
                            Some(n) if *n >= MAX_DOCS_PER_USER => {
                                format!("a user may own at most {MAX_DOCS_PER_USER} documents")
                            }
                            Some(n) => {
                                *n += 1;
                                insert.push(g);
                                continue;
                            }
                        };
                        if groups[g].write.likely_new {
                            refused_unseen.insert(g, refusal);
                            raced.push(g);
                        } else {
                            groups[g].rejected = Some(refusal);
                        }
                    }
                    // Created with their counts; a document another transaction created
                    // meanwhile is counted like any other (or refused if it is not the writer's).
                    for chunk in insert.chunks(BIND_CHUNK / 8) {
                        let mut qb = QueryBuilder::<$db>::new(
                            "INSERT INTO documents (id, owner_id, kind, course_id, change_count, byte_size, created_at, updated_at) ",
                        );
                        qb.push_values(chunk, |mut b, &g| {
                            let group = &groups[g];
                            b.push_bind(group.write.doc_id.clone())
                                .push_bind(group.write.owner_id.clone())
                                .push_bind(group.write.kind.clone())
                                .push_bind(group.write.course_id.clone())
                                .push_bind(group.rows)
                                .push_bind(group.bytes)
                                .push_bind(now)
                                .push_bind(now);
                        });
                        qb.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
                        let mut created = std::collections::HashSet::new();
                        for r in qb.build().fetch_all(&mut *tx).await.map_err(map_err)? {
                            created.insert(r.try_get::<String, _>("id")?);
                        }
                        for &g in chunk {
                            if created.contains(&groups[g].write.doc_id) {
                                groups[g].pending = Some(groups[g].rows);
                            } else {
                                raced.push(g);
                            }
                        }
                    }
                    if !raced.is_empty() {
                        count_writes(&mut tx, &mut groups, &raced, now).await?;
                        for g in raced {
                            if groups[g].pending.is_none() {
                                groups[g].rejected = Some(
                                    refused_unseen
                                        .remove(&g)
                                        .unwrap_or_else(|| "document belongs to another user".into()),
                                );
                            }
                        }
                    }
                }

                // 3. The change rows of every accepted write, in batch order.
                let accepted: Vec<usize> = (0..writes.len()).filter(|&i| groups[group_of[i]].pending.is_some()).collect();
                let mut seqs: std::collections::HashMap<String, std::collections::VecDeque<i64>> = std::collections::HashMap::new();
                for chunk in accepted.chunks(BIND_CHUNK / 3) {
                    let mut qb = QueryBuilder::<$db>::new("INSERT INTO document_changes (doc_id, data, created_at) ");
                    qb.push_values(chunk, |mut b, &i| {
                        b.push_bind(writes[i].doc_id.clone())
                            .push_bind(writes[i].changes.clone())
                            .push_bind(now);
                    });
                    qb.push(" RETURNING seq, doc_id");
                    let mut returned: Vec<(String, i64)> = Vec::with_capacity(chunk.len());
                    for r in qb.build().fetch_all(&mut *tx).await.map_err(map_err)? {
                        returned.push((r.try_get("doc_id")?, r.try_get("seq")?));
                    }
                    // Neither database promises RETURNING's order; sequence numbers rise in
                    // insertion order, so a document's writes take its numbers in order.
                    returned.sort_by_key(|(_, seq)| *seq);
                    for (doc, seq) in returned {
                        seqs.entry(doc).or_default().push_back(seq);
                    }
                }

                // 4. The projection rows, the last of each row's writes winning (each row's
                //    columns depend only on its newest values and its stored row, so applying
                //    the last equals applying all in order).
                let projections: Vec<(&str, &Projection)> = accepted
                    .iter()
                    .filter_map(|&i| writes[i].projection.as_ref().map(|p| (writes[i].owner_id.as_str(), p)))
                    .collect();
                write_projections(&mut tx, &projections, now).await?;

                let mut outcomes = Vec::with_capacity(writes.len());
                let mut notes = Vec::new();
                for (i, w) in writes.iter().enumerate() {
                    let group = &groups[group_of[i]];
                    match (group.pending, &group.rejected) {
                        (Some(pending), _) => {
                            let seq = seqs
                                .get_mut(&w.doc_id)
                                .and_then(|q| q.pop_front())
                                .ok_or_else(|| StoreError::Corrupt(format!("no change row returned for {}", w.doc_id)))?;
                            notes.push((w.doc_id.clone(), seq, w.changes.as_slice()));
                            outcomes.push(WriteOutcome::Stored { seq, pending_changes: pending });
                        }
                        (None, Some(why)) => outcomes.push(WriteOutcome::Rejected(why.clone())),
                        (None, None) => outcomes.push(WriteOutcome::Rejected("document belongs to another user".into())),
                    }
                }
                self.notify(&mut tx, &notes).await?;
                tx.commit().await.map_err(map_err)?;
                Ok(outcomes)
            }

            async fn documents_worth_compacting(&self, ids: &[String]) -> StoreResult<Vec<String>> {
                let mut worth = Vec::new();
                for chunk in ids.chunks(BIND_CHUNK / 2) {
                    // The change row comes along only for a document stored as just that row.
                    // The ids are named on both sides of the join: PostgreSQL does not carry
                    // `d.id IN (…)` over to the change rows, and without the second list it
                    // hashed the whole `document_changes` table on every call.
                    let mut qb = QueryBuilder::<$db>::new(
                        "SELECT d.id AS id, d.change_count AS change_rows, c.data AS data FROM documents d \
                         LEFT JOIN document_changes c ON c.doc_id = d.id AND d.snapshot IS NULL AND d.change_count = 1 \
                         AND c.doc_id IN (",
                    );
                    push_bind_list(&mut qb, chunk.iter().cloned());
                    qb.push(") WHERE d.id IN (");
                    push_bind_list(&mut qb, chunk.iter().cloned());
                    qb.push(")");
                    let mut found: std::collections::BTreeMap<String, (i64, Vec<Vec<u8>>)> = std::collections::BTreeMap::new();
                    for r in qb.build().fetch_all(&self.pool).await.map_err(map_err)? {
                        let entry = found.entry(r.try_get("id")?).or_insert((r.try_get("change_rows")?, Vec::new()));
                        entry.1.extend(r.try_get::<Option<Vec<u8>>, _>("data")?);
                    }
                    for (id, (rows, data)) in found {
                        let small = match data.as_slice() {
                            [row] => {
                                let mut doc = automerge::Automerge::new();
                                doc.load_incremental(row).is_ok()
                                    && doc.get_missing_deps(&[]).is_empty()
                                    && row.len() * 4 <= doc.save().len() * 5
                            }
                            // More rows than counted were written meanwhile: worth it.
                            _ => false,
                        };
                        if rows > 0 && !small {
                            worth.push(id);
                        }
                    }
                }
                Ok(worth)
            }

            async fn compact_document(&self, id: &str) -> StoreResult<()> {
                // Read and rebuild without holding anything: the rebuild (a load and a save of
                // the whole document) is the slow part, and a server on PostgreSQL commits every
                // user's writes through one writer, which would wait behind a locked row. One
                // statement, so the snapshot and the change rows are of one moment (see
                // `load_documents`).
                let rows = sqlx::query(
                    "SELECT CAST(0 AS BIGINT) AS part, CAST(0 AS BIGINT) AS seq, snapshot AS data FROM documents WHERE id = $1 \
                     UNION ALL \
                     SELECT CAST(1 AS BIGINT), seq, data FROM document_changes WHERE doc_id = $1 \
                     ORDER BY part, seq",
                )
                .bind(id)
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
                let Some(first) = rows.first().filter(|r| r.try_get::<i64, _>("part").ok() == Some(0)) else {
                    return Ok(());
                };
                let read_snapshot: Option<Vec<u8>> = first.try_get("data")?;
                let mut folded: Vec<i64> = Vec::with_capacity(rows.len() - 1);
                let mut chunks: Vec<&[u8]> = Vec::with_capacity(rows.len() - 1);
                for r in &rows[1..] {
                    folded.push(r.try_get("seq")?);
                    chunks.push(r.try_get::<Option<&[u8]>, _>("data")?.unwrap_or_default());
                }
                if folded.is_empty() {
                    return Ok(());
                }
                let snapshot = match sync_core::docs::compaction::fold_stored(read_snapshot.as_deref(), &chunks)
                    .map_err(|e| StoreError::Corrupt(format!("snapshot of {id}: {e}")))?
                {
                    Folded::Snapshot(snapshot) => snapshot,
                    // Changes whose dependencies are missing stay as rows until those arrive.
                    Folded::MissingDeps => return Ok(()),
                    // A chunk automerge cannot read stays as a change row (never dropped).
                    Folded::UnreadableChunk(why) => {
                        tracing::error!(doc = id, error = why, "unreadable change chunk kept out of the snapshot");
                        return Ok(());
                    }
                };

                // Then lock the row (writers update it before inserting changes, so no change
                // of this document commits meanwhile) and fold only if nobody compacted it since
                // the read. Exactly the rows read are deleted: rows written since stay, counted.
                let mut tx = self.writes().begin_with(Self::BEGIN_WRITE).await.map_err(map_err)?;
                let current = sqlx::query(&format!("SELECT snapshot FROM documents WHERE id = $1 {}", Self::FOR_UPDATE))
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map_err)?;
                let Some(current) = current else {
                    return Ok(());
                };
                if current.try_get::<Option<Vec<u8>>, _>("snapshot")? != read_snapshot {
                    // Compacted by another instance meanwhile: this rebuild is stale (a later
                    // write asks again).
                    return Ok(());
                }
                for chunk in folded.chunks(BIND_CHUNK) {
                    let mut qb = QueryBuilder::<$db>::new("DELETE FROM document_changes WHERE doc_id = ");
                    qb.push_bind(id).push(" AND seq IN (");
                    push_bind_list(&mut qb, chunk.iter().copied());
                    qb.push(")");
                    qb.build().execute(&mut *tx).await.map_err(map_err)?;
                }
                sqlx::query(
                    "UPDATE documents SET snapshot = $2, \
                       change_count = (SELECT count(*) FROM document_changes WHERE doc_id = $1), \
                       byte_size = $3 + COALESCE((SELECT sum(length(data)) FROM document_changes WHERE doc_id = $1), 0) \
                     WHERE id = $1",
                )
                .bind(id)
                .bind(&snapshot)
                .bind(snapshot.len() as i64)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(())
            }

            async fn document_change(&self, seq: i64) -> StoreResult<Option<(String, Vec<u8>)>> {
                let row = sqlx::query("SELECT doc_id, data FROM document_changes WHERE seq = $1")
                    .bind(seq)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                row.map(|r| Ok((r.try_get("doc_id")?, r.try_get("data")?))).transpose()
            }

            async fn user_documents(&self, user_id: &str) -> StoreResult<Vec<DocumentInfo>> {
                let rows = sqlx::query("SELECT id, kind, course_id FROM documents WHERE owner_id = $1 ORDER BY kind, course_id, id")
                    .bind(user_id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                rows.iter()
                    .map(|r| Ok(DocumentInfo { id: r.try_get("id")?, kind: r.try_get("kind")?, course_id: r.try_get("course_id")? }))
                    .collect()
            }

            async fn save_sync_states(&self, states: &[SyncStateRow], now: i64) -> StoreResult<()> {
                if states.is_empty() {
                    return Ok(());
                }
                let mut tx = self.writes().begin_with(Self::BEGIN_WRITE).await.map_err(map_err)?;
                for s in states {
                    // Only for documents that exist (a state for a never-stored document is moot).
                    sqlx::query(
                        "INSERT INTO sync_states (doc_id, peer_storage_id, state, updated_at) \
                         SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM documents WHERE id = $1) \
                         ON CONFLICT (doc_id, peer_storage_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                    )
                    .bind(&s.doc_id)
                    .bind(&s.storage_id)
                    .bind(&s.state)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                }
                tx.commit().await.map_err(map_err)?;
                Ok(())
            }

            async fn delete_sync_states(&self, storage_ids: Option<&[String]>) -> StoreResult<()> {
                match storage_ids {
                    None => {
                        sqlx::query("DELETE FROM sync_states").execute(self.writes()).await.map_err(map_err)?;
                    }
                    Some([]) => {}
                    Some(ids) => {
                        let mut qb = QueryBuilder::<$db>::new("DELETE FROM sync_states WHERE peer_storage_id IN (");
                        push_bind_list(&mut qb, ids.iter().cloned());
                        qb.push(")");
                        qb.build().execute(self.writes()).await.map_err(map_err)?;
                    }
                }
                Ok(())
            }

            async fn heartbeat_instance(&self, id: &str, address: &str, started_at: i64, now: i64) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO instances (id, address, started_at, heartbeat_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
                )
                .bind(id)
                .bind(address)
                .bind(started_at)
                .bind(now)
                .execute(self.writes())
                .await
                .map_err(map_err)?;
                Ok(())
            }

            async fn remove_instance(&self, id: &str) -> StoreResult<()> {
                let mut tx = self.writes().begin_with(Self::BEGIN_WRITE).await.map_err(map_err)?;
                sqlx::query("DELETE FROM devices WHERE instance_id = $1").bind(id).execute(&mut *tx).await.map_err(map_err)?;
                sqlx::query("DELETE FROM instances WHERE id = $1").bind(id).execute(&mut *tx).await.map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(())
            }

            async fn reap_instances(&self, before: i64) -> StoreResult<u64> {
                let mut tx = self.writes().begin_with(Self::BEGIN_WRITE).await.map_err(map_err)?;
                sqlx::query("DELETE FROM devices WHERE instance_id IN (SELECT id FROM instances WHERE heartbeat_at < $1)")
                    .bind(before)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                let n = sqlx::query("DELETE FROM instances WHERE heartbeat_at < $1")
                    .bind(before)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?
                    .rows_affected();
                tx.commit().await.map_err(map_err)?;
                Ok(n)
            }

            async fn device_connected(&self, d: &Device) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO devices (conn_id, instance_id, user_id, peer_id, remote_addr, user_agent, connected_at, last_sync_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (conn_id) DO NOTHING",
                )
                .bind(&d.conn_id)
                .bind(&d.instance_id)
                .bind(&d.user_id)
                .bind(&d.peer_id)
                .bind(&d.remote_addr)
                .bind(&d.user_agent)
                .bind(d.connected_at.0)
                .bind(d.last_sync_at.map(|t| t.0))
                .execute(self.writes())
                .await
                .map_err(map_err)?;
                Ok(())
            }

            async fn device_disconnected(&self, conn_id: &str) -> StoreResult<()> {
                sqlx::query("DELETE FROM devices WHERE conn_id = $1").bind(conn_id).execute(self.writes()).await.map_err(map_err)?;
                Ok(())
            }

            async fn touch_devices(&self, seen: &[(String, i64)]) -> StoreResult<()> {
                if seen.is_empty() {
                    return Ok(());
                }
                let mut tx = self.writes().begin_with(Self::BEGIN_WRITE).await.map_err(map_err)?;
                for (conn, at) in seen {
                    sqlx::query("UPDATE devices SET last_sync_at = $2 WHERE conn_id = $1")
                        .bind(conn)
                        .bind(at)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                }
                tx.commit().await.map_err(map_err)?;
                Ok(())
            }

            async fn broadcast(&self, event: &str) -> StoreResult<()> {
                self.broadcast_event(event).await
            }

            async fn list_devices(&self, user_id: Option<&str>) -> StoreResult<Vec<Device>> {
                let mut qb = QueryBuilder::<$db>::new(
                    "SELECT conn_id, instance_id, user_id, peer_id, remote_addr, user_agent, connected_at, last_sync_at FROM devices WHERE 1 = 1",
                );
                if let Some(u) = user_id {
                    qb.push(" AND user_id = ").push_bind(u.to_string());
                }
                qb.push(" ORDER BY connected_at DESC, conn_id LIMIT 1000");
                let rows = qb.build().fetch_all(&self.pool).await.map_err(map_err)?;
                rows.iter().map(device_row).collect()
            }
        }

        /// The bytes a tower-sessions record holds for "this session is `user_id`'s": the
        /// MessagePack key `uid` followed by the id as a MessagePack string (records are
        /// stored as MessagePack by tower-sessions-sqlx-store). Matching the key with the value
        /// keeps any other field that happens to hold the same text out of it.
        fn session_needle(user_id: &str) -> Vec<u8> {
            fn msgpack_str(out: &mut Vec<u8>, s: &str) {
                let len = s.len();
                if len < 32 {
                    out.push(0xa0 | len as u8);
                } else if len < 256 {
                    out.extend_from_slice(&[0xd9, len as u8]);
                } else if len < 65_536 {
                    out.push(0xda);
                    out.extend_from_slice(&(len as u16).to_be_bytes());
                } else {
                    out.push(0xdb);
                    out.extend_from_slice(&(len as u32).to_be_bytes());
                }
                out.extend_from_slice(s.as_bytes());
            }
            let mut out = Vec::with_capacity(user_id.len() + 8);
            msgpack_str(&mut out, crate::auth::SESSION_USER);
            msgpack_str(&mut out, user_id);
            out
        }

        fn daily_row(r: &DbRow) -> StoreResult<DailyCount> {
            let day: i64 = r.try_get("day")?;
            Ok(DailyCount {
                day: Timestamp(day * 86_400_000).to_rfc3339()[..10].to_string(),
                count: r.try_get("n")?,
            })
        }

        /// Most bind parameters in one statement, well under both databases' limits.
        const BIND_CHUNK: usize = 3_000;

        /// The writes of one group commit to one document by one writer.
        struct WriteGroup<'a> {
            /// The first of them (document, owner, kind, course).
            write: &'a DocWrite,
            /// How many change rows they append.
            rows: i64,
            /// How many bytes of changes they append.
            bytes: i64,
            /// Change rows now waiting for compaction, once counted.
            pending: Option<i64>,
            /// Why they were refused.
            rejected: Option<String>,
        }

        /// The insert of log entries, skipping those whose legacy key is stored already.
        fn insert_logs_query(logs: &[NewLog]) -> QueryBuilder<'static, $db> {
            let mut qb = QueryBuilder::<$db>::new(
                "INSERT INTO system_logs (level, source, message, context, user_id, request_id, legacy_key, created_at) ",
            );
            qb.push_values(logs, |mut b, l| {
                b.push_bind(l.level.as_str())
                    .push_bind(l.source.clone())
                    .push_bind(l.message.clone())
                    .push_bind(l.context.as_ref().map(json_text))
                    .push_bind(l.user_id.clone())
                    .push_bind(l.request_id.clone())
                    .push_bind(l.legacy_key.clone())
                    .push_bind(l.created_at);
            });
            qb.push(" ON CONFLICT (legacy_key) DO NOTHING");
            qb
        }

        /// Binds `items` as a comma-separated list (the inside of an `IN (…)`).
        fn push_bind_list<'a, T>(qb: &mut QueryBuilder<'a, $db>, items: impl IntoIterator<Item = T>)
        where
            T: 'a + sqlx::Encode<'a, $db> + sqlx::Type<$db>,
        {
            let mut list = qb.separated(", ");
            for item in items {
                list.push_bind(item);
            }
        }

        /// The `enrollments` columns a course document's projection writes, in the order
        /// [`bind_progress`] binds them.
        const PROGRESS_COLUMNS: &str = "progress, completed_lessons, completed_count, time_spent_secs, last_activity, \
            attempt, completed_at, updated_at";
        /// What a course document's projection updates in an existing `enrollments` row.
        const PROGRESS_SET: &str = "progress = excluded.progress, completed_lessons = excluded.completed_lessons, \
            completed_count = excluded.completed_count, time_spent_secs = excluded.time_spent_secs, \
            last_activity = excluded.last_activity, attempt = excluded.attempt, updated_at = excluded.updated_at, \
            completed_at = CASE WHEN excluded.progress >= 100 THEN COALESCE(enrollments.completed_at, excluded.updated_at) END";

        /// Binds [`PROGRESS_COLUMNS`] of one row.
        fn bind_progress<Sep: std::fmt::Display>(
            b: &mut sqlx::query_builder::Separated<'_, '_, $db, Sep>,
            r: &sync_core::docs::projection::CourseProgressRow,
            now: i64,
        ) {
            b.push_bind(r.progress)
                .push_bind(serde_json::to_string(&r.completed_lessons).unwrap_or_else(|_| "[]".into()))
                .push_bind(r.completed_lessons.len() as i64)
                .push_bind(r.time_spent_secs)
                .push_bind(r.last_activity)
                .push_bind(i64::from(r.attempt))
                .push_bind((r.progress >= 100.0).then_some(now))
                .push_bind(now);
        }

        /// The `status` of a new `enrollments` row: unenrolled wins, then a finished course.
        fn enrollment_status(unenrolled: bool, r: &sync_core::docs::projection::CourseProgressRow) -> &'static str {
            if unenrolled {
                "unenrolled"
            } else if r.progress >= 100.0 {
                "completed"
            } else {
                "active"
            }
        }

        /// Counts the groups `which` against their documents, in one statement per chunk, where
        /// the document exists and belongs to the writer; sets their `pending`.
        async fn count_writes(
            tx: &mut sqlx::Transaction<'_, $db>,
            groups: &mut [WriteGroup<'_>],
            which: &[usize],
            now: i64,
        ) -> StoreResult<()> {
            for chunk in which.chunks(BIND_CHUNK / 6) {
                let mut qb = QueryBuilder::<$db>::new("UPDATE documents SET change_count = change_count + v.column3, byte_size = byte_size + v.column4, ");
                qb.push("updated_at = ").push_bind(now).push(
                    ", kind = CASE WHEN kind = 'other' THEN v.column5 ELSE kind END, course_id = COALESCE(course_id, v.column6) FROM (",
                );
                qb.push_values(chunk, |mut b, &g| {
                    let group = &groups[g];
                    b.push_bind(group.write.doc_id.clone())
                        .push_bind(group.write.owner_id.clone())
                        .push_bind(group.rows)
                        .push_bind(group.bytes)
                        .push_bind(group.write.kind.clone())
                        .push_bind(group.write.course_id.clone());
                });
                qb.push(") AS v WHERE documents.id = v.column1 AND documents.owner_id = v.column2 RETURNING id, owner_id, change_count");
                let mut counted: std::collections::HashMap<(String, String), i64> = std::collections::HashMap::new();
                for r in qb.build().fetch_all(&mut **tx).await.map_err(map_err)? {
                    counted.insert((r.try_get("id")?, r.try_get("owner_id")?), r.try_get("change_count")?);
                }
                for &g in chunk {
                    let key = (groups[g].write.doc_id.clone(), groups[g].write.owner_id.clone());
                    if let Some(n) = counted.get(&key) {
                        groups[g].pending = Some(*n);
                    }
                }
            }
            Ok(())
        }

        /// Writes the projection rows of a group commit's changes, inside its transaction:
        /// one statement per table (and chunk), the last write of each row winning.
        async fn write_projections(
            tx: &mut sqlx::Transaction<'_, $db>,
            projections: &[(&str, &Projection)],
            now: i64,
        ) -> StoreResult<()> {
            use sync_core::docs::projection::{CourseProgressRow, EnrollmentStatusRow, PreferencesRow};
            let mut prefs: Vec<(&str, &PreferencesRow)> = Vec::new();
            let mut statuses: Vec<(&str, &EnrollmentStatusRow)> = Vec::new();
            let mut progress: Vec<(&str, &CourseProgressRow)> = Vec::new();
            // Newest first, keeping the first seen of each row: the last write wins.
            let mut seen_prefs = std::collections::HashSet::new();
            let mut seen_status = std::collections::HashSet::new();
            let mut seen_progress = std::collections::HashSet::new();
            for (owner, p) in projections.iter().rev() {
                match p {
                    Projection::Preferences(row) => {
                        if seen_prefs.insert(*owner) {
                            prefs.push((owner, row));
                        }
                    }
                    Projection::Learning(rows) => {
                        for row in rows.iter().rev() {
                            if seen_status.insert((*owner, row.course_id.as_str())) {
                                statuses.push((owner, row));
                            }
                        }
                    }
                    Projection::Course(row) => {
                        if seen_progress.insert((*owner, row.course_id.as_str())) {
                            progress.push((owner, row));
                        }
                    }
                }
            }
            for chunk in prefs.chunks(BIND_CHUNK / 5) {
                let mut qb = QueryBuilder::<$db>::new("INSERT INTO user_preferences (user_id, theme, language, settings, updated_at) ");
                qb.push_values(chunk, |mut b, (owner, p)| {
                    b.push_bind(owner.to_string())
                        .push_bind(p.theme.clone())
                        .push_bind(p.language.clone())
                        .push_bind(serde_json::to_string(&p.settings).unwrap_or_else(|_| "{}".into()))
                        .push_bind(now);
                });
                qb.push(
                    " ON CONFLICT (user_id) DO UPDATE SET theme = excluded.theme, language = excluded.language, \
                     settings = excluded.settings, updated_at = excluded.updated_at",
                );
                qb.build().execute(&mut **tx).await.map_err(map_err)?;
            }
            // A course whose status and progress both changed in this commit (a new enrollment
            // and its course document, as every import writes them) gets one row write with
            // both, instead of the two statements below one after the other. The outcome is
            // the same: after both, the row holds the status row's fields, the progress row's
            // fields, and a status computed from the new `doc_status` and progress.
            let progress_of: std::collections::HashMap<(&str, &str), usize> = progress
                .iter()
                .enumerate()
                .map(|(i, (owner, r))| ((*owner, r.course_id.as_str()), i))
                .collect();
            let mut both: Vec<(&str, &EnrollmentStatusRow, &CourseProgressRow)> = Vec::new();
            let mut merged = vec![false; progress.len()];
            statuses.retain(|(owner, s)| match progress_of.get(&(*owner, s.course_id.as_str())) {
                Some(&i) => {
                    merged[i] = true;
                    both.push((owner, s, progress[i].1));
                    false
                }
                None => true,
            });
            let mut merged = merged.into_iter();
            progress.retain(|_| !merged.next().unwrap_or(false));
            for chunk in both.chunks(BIND_CHUNK / 13) {
                let mut qb = QueryBuilder::<$db>::new(format!(
                    "INSERT INTO enrollments (user_id, course_id, doc_status, status, enrolled_at, {PROGRESS_COLUMNS}) "
                ));
                qb.push_values(chunk, |mut b, (owner, s, r)| {
                    let unenrolled = s.status == sync_core::docs::learning::Status::Unenrolled;
                    b.push_bind(owner.to_string())
                        .push_bind(r.course_id.clone())
                        .push_bind(s.status.as_str())
                        .push_bind(enrollment_status(unenrolled, r))
                        .push_bind(s.enrolled_at);
                    bind_progress(&mut b, r, now);
                });
                qb.push(format!(
                    " ON CONFLICT (user_id, course_id) DO UPDATE SET doc_status = excluded.doc_status, \
                     enrolled_at = excluded.enrolled_at, {PROGRESS_SET}, status = excluded.status"
                ));
                qb.build().execute(&mut **tx).await.map_err(map_err)?;
            }
            for chunk in statuses.chunks(BIND_CHUNK / 6) {
                let mut qb = QueryBuilder::<$db>::new("INSERT INTO enrollments (user_id, course_id, doc_status, status, enrolled_at, updated_at) ");
                qb.push_values(chunk, |mut b, (owner, r)| {
                    b.push_bind(owner.to_string())
                        .push_bind(r.course_id.clone())
                        .push_bind(r.status.as_str())
                        .push_bind(r.status.as_str())
                        .push_bind(r.enrolled_at)
                        .push_bind(now);
                });
                qb.push(
                    " ON CONFLICT (user_id, course_id) DO UPDATE SET doc_status = excluded.doc_status, \
                     enrolled_at = excluded.enrolled_at, updated_at = excluded.updated_at, \
                     status = CASE WHEN excluded.doc_status = 'unenrolled' THEN 'unenrolled' \
                                   WHEN enrollments.progress >= 100 THEN 'completed' ELSE 'active' END",
                );
                qb.build().execute(&mut **tx).await.map_err(map_err)?;
            }
            for chunk in progress.chunks(BIND_CHUNK / 12) {
                let mut qb = QueryBuilder::<$db>::new(format!(
                    "INSERT INTO enrollments (user_id, course_id, doc_status, status, {PROGRESS_COLUMNS}) "
                ));
                qb.push_values(chunk, |mut b, (owner, r)| {
                    b.push_bind(owner.to_string())
                        .push_bind(r.course_id.clone())
                        .push_bind("active")
                        .push_bind(enrollment_status(false, r));
                    bind_progress(&mut b, r, now);
                });
                qb.push(format!(
                    " ON CONFLICT (user_id, course_id) DO UPDATE SET {PROGRESS_SET}, \
                     status = CASE WHEN enrollments.doc_status = 'unenrolled' THEN 'unenrolled' \
                                   WHEN excluded.progress >= 100 THEN 'completed' ELSE 'active' END"
                ));
                qb.build().execute(&mut **tx).await.map_err(map_err)?;
            }
            Ok(())
        }
    };
}

pub(crate) use impl_store;
