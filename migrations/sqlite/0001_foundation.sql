-- Foundation schema (SQLite). Ids are UUIDv7 as 16-byte BLOBs, times RFC 3339 UTC text in whole seconds (so text order is time order), documents JSON text.
CREATE TABLE users (
    id            BLOB PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    password_hash TEXT NOT NULL,
    status        TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled', 'expired')),
    expires_at    TEXT,
    token_version INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

CREATE TABLE ssh_keys (
    id          BLOB PRIMARY KEY,
    user_id     BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    key_type    TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    UNIQUE (user_id, fingerprint)
);

CREATE TABLE egress_ips (
    id          BLOB PRIMARY KEY,
    label       TEXT NOT NULL,
    ip_address  TEXT NOT NULL,
    provider    TEXT NOT NULL,
    tunnel_type TEXT NOT NULL CHECK (tunnel_type IN ('wireguard', 'proxy')),
    settings    TEXT NOT NULL,
    last_test   TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE hosts (
    id                BLOB PRIMARY KEY,
    short_id          TEXT NOT NULL UNIQUE,
    user_id           BLOB REFERENCES users(id) ON DELETE SET NULL,
    status            TEXT NOT NULL,
    status_reason     TEXT,
    memory_mb         INTEGER NOT NULL,
    cpus              REAL NOT NULL,
    pids_limit        INTEGER NOT NULL,
    ssh_password_hash TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE INDEX hosts_user ON hosts (user_id);

CREATE TABLE bindings (
    id           BLOB PRIMARY KEY,
    host_id      BLOB NOT NULL UNIQUE REFERENCES hosts(id) ON DELETE CASCADE,
    egress_ip_id BLOB NOT NULL REFERENCES egress_ips(id),
    created_at   TEXT NOT NULL
);
CREATE INDEX bindings_egress ON bindings (egress_ip_id);

CREATE TABLE tasks (
    id          BLOB PRIMARY KEY,
    kind        TEXT NOT NULL,
    host_id     BLOB,
    status      TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    progress    TEXT,
    error       TEXT,
    payload     TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    started_at  TEXT,
    finished_at TEXT
);
CREATE INDEX tasks_status ON tasks (status, id);
CREATE INDEX tasks_host ON tasks (host_id);

CREATE TABLE events (
    id          BLOB PRIMARY KEY,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id   TEXT,
    user_id     BLOB,
    host_id     BLOB,
    source_ip   TEXT,
    details     TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX events_created ON events (created_at);
CREATE INDEX events_user ON events (user_id);
CREATE INDEX events_host ON events (host_id);

CREATE TABLE api_tokens (
    id           BLOB PRIMARY KEY,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    abilities    TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    expires_at   TEXT,
    last_used_at TEXT,
    created_at   TEXT NOT NULL
);
