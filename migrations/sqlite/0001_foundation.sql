-- LearnSync schema, SQLite. Timestamps are epoch milliseconds (BIGINT) on both backends so
-- that the two implementations share their queries; ids are text.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT UNIQUE,
    display_name  TEXT NOT NULL,
    password_hash TEXT,
    role          TEXT NOT NULL CHECK (role IN ('learner', 'teacher', 'admin')),
    legacy_id     TEXT UNIQUE,
    doc_seed      BLOB NOT NULL,
    sync_epoch    BIGINT NOT NULL DEFAULT 0,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX users_role_created ON users (role, created_at, id);
CREATE INDEX users_created ON users (created_at, id);

-- tower-sessions (tower-sessions-sqlx-store's SqliteStore layout).
CREATE TABLE IF NOT EXISTS tower_sessions (
    id          TEXT PRIMARY KEY NOT NULL,
    data        BLOB NOT NULL,
    expiry_date INTEGER NOT NULL
);

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX api_tokens_user ON api_tokens (user_id, created_at);

CREATE TABLE courses (
    -- An explicit integer key: FTS5's external content is keyed by it, and VACUUM may renumber
    -- implicit rowids.
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL CHECK (kind IN ('course', 'subject')),
    title       TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    category    TEXT,
    level       TEXT,
    status      TEXT NOT NULL CHECK (status IN ('draft', 'published', 'archived')),
    author_id   TEXT REFERENCES users (id) ON DELETE SET NULL,
    lessons     TEXT NOT NULL DEFAULT '[]',
    extra       TEXT NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
-- Full-text search: an FTS5 index over the courses table, kept in step by triggers.
CREATE VIRTUAL TABLE courses_fts USING fts5(
    title, description, category, content = 'courses', content_rowid = 'seq',
    tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TRIGGER courses_fts_insert AFTER INSERT ON courses BEGIN
    INSERT INTO courses_fts (rowid, title, description, category)
    VALUES (new.seq, new.title, new.description, coalesce(new.category, ''));
END;
CREATE TRIGGER courses_fts_delete AFTER DELETE ON courses BEGIN
    INSERT INTO courses_fts (courses_fts, rowid, title, description, category)
    VALUES ('delete', old.seq, old.title, old.description, coalesce(old.category, ''));
END;
CREATE TRIGGER courses_fts_update AFTER UPDATE ON courses BEGIN
    INSERT INTO courses_fts (courses_fts, rowid, title, description, category)
    VALUES ('delete', old.seq, old.title, old.description, coalesce(old.category, ''));
    INSERT INTO courses_fts (rowid, title, description, category)
    VALUES (new.seq, new.title, new.description, coalesce(new.category, ''));
END;
CREATE INDEX courses_status_created ON courses (status, created_at, id);
CREATE INDEX courses_status_title ON courses (status, title, id);
CREATE INDEX courses_status_updated ON courses (status, updated_at, id);
CREATE INDEX courses_created ON courses (created_at, id);
CREATE INDEX courses_title ON courses (title, id);
CREATE INDEX courses_updated ON courses (updated_at, id);
CREATE INDEX courses_kind ON courses (kind, status);
CREATE INDEX courses_category ON courses (category, status);
CREATE INDEX courses_level ON courses (level, status);
CREATE INDEX courses_author ON courses (author_id, status);

CREATE TABLE enrollments (
    user_id           TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    course_id         TEXT NOT NULL,
    doc_status        TEXT NOT NULL DEFAULT 'active' CHECK (doc_status IN ('active', 'unenrolled')),
    status            TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'unenrolled', 'completed')),
    enrolled_at       BIGINT,
    progress          REAL NOT NULL DEFAULT 0,
    completed_lessons TEXT NOT NULL DEFAULT '[]',
    completed_count   BIGINT NOT NULL DEFAULT 0,
    time_spent_secs   BIGINT NOT NULL DEFAULT 0,
    last_activity     BIGINT,
    attempt           BIGINT NOT NULL DEFAULT 1,
    completed_at      BIGINT,
    updated_at        BIGINT NOT NULL,
    PRIMARY KEY (user_id, course_id)
);
CREATE INDEX enrollments_course_status ON enrollments (course_id, status);
CREATE INDEX enrollments_enrolled_at ON enrollments (enrolled_at);
CREATE INDEX enrollments_completed_at ON enrollments (completed_at);
CREATE INDEX enrollments_activity ON enrollments (last_activity, user_id);

CREATE TABLE user_preferences (
    user_id    TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    theme      TEXT,
    language   TEXT,
    settings   TEXT NOT NULL DEFAULT '{}',
    updated_at BIGINT NOT NULL
);

CREATE TABLE course_reports (
    id          TEXT PRIMARY KEY,
    course_id   TEXT NOT NULL,
    reporter_id TEXT REFERENCES users (id) ON DELETE SET NULL,
    reason      TEXT NOT NULL,
    details     TEXT,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'resolved', 'dismissed')),
    note        TEXT,
    resolved_by TEXT REFERENCES users (id) ON DELETE SET NULL,
    resolved_at BIGINT,
    legacy_id   TEXT UNIQUE,
    extra       TEXT NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX course_reports_status_created ON course_reports (status, created_at, id);
CREATE INDEX course_reports_created ON course_reports (created_at, id);
CREATE INDEX course_reports_course ON course_reports (course_id, created_at);
CREATE INDEX course_reports_reporter ON course_reports (reporter_id, created_at);

CREATE TABLE system_logs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    level      TEXT NOT NULL CHECK (level IN ('debug', 'info', 'warn', 'error')),
    source     TEXT NOT NULL,
    message    TEXT NOT NULL,
    context    TEXT,
    user_id    TEXT,
    request_id TEXT,
    legacy_key TEXT UNIQUE,
    created_at BIGINT NOT NULL
);
CREATE INDEX system_logs_created ON system_logs (created_at, id);
CREATE INDEX system_logs_level ON system_logs (level, created_at, id);
CREATE INDEX system_logs_source ON system_logs (source, created_at, id);
CREATE INDEX system_logs_user ON system_logs (user_id, created_at, id);

CREATE TABLE documents (
    id          TEXT PRIMARY KEY,
    owner_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('preferences', 'learning', 'course', 'other')),
    course_id   TEXT,
    snapshot    BLOB,
    change_count BIGINT NOT NULL DEFAULT 0,
    byte_size   BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX documents_owner ON documents (owner_id, kind);

CREATE TABLE document_changes (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id     TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    data       BLOB NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX document_changes_doc ON document_changes (doc_id, seq);

CREATE TABLE sync_states (
    doc_id          TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    peer_storage_id TEXT NOT NULL,
    state           BLOB NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (doc_id, peer_storage_id)
);
CREATE INDEX sync_states_peer ON sync_states (peer_storage_id);

CREATE TABLE migration_runs (
    id          TEXT PRIMARY KEY,
    actor_id    TEXT REFERENCES users (id) ON DELETE SET NULL,
    source      TEXT NOT NULL CHECK (source IN ('cli', 'admin', 'client')),
    label       TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'partial', 'failed')),
    dry_run     BOOLEAN NOT NULL DEFAULT FALSE,
    dumps_total BIGINT NOT NULL DEFAULT 0,
    dumps_done  BIGINT NOT NULL DEFAULT 0,
    counts      TEXT NOT NULL DEFAULT '{}',
    report      TEXT NOT NULL DEFAULT '[]',
    errors      TEXT NOT NULL DEFAULT '[]',
    started_at  BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX migration_runs_started ON migration_runs (started_at, id);

CREATE TABLE instances (
    id           TEXT PRIMARY KEY,
    address      TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);

CREATE TABLE devices (
    conn_id      TEXT PRIMARY KEY,
    instance_id  TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    peer_id      TEXT NOT NULL,
    remote_addr  TEXT NOT NULL,
    user_agent   TEXT NOT NULL,
    connected_at BIGINT NOT NULL,
    last_sync_at BIGINT
);
CREATE INDEX devices_user ON devices (user_id);
CREATE INDEX devices_instance ON devices (instance_id);

CREATE TABLE server_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
