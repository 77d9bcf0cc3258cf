-- Foundation schema (PostgreSQL). Ids are UUIDv7, times TIMESTAMPTZ (whole seconds, UTC), documents JSONB.
CREATE TABLE users (
    id            UUID PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    password_hash TEXT NOT NULL,
    status        TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled', 'expired')),
    expires_at    TIMESTAMPTZ,
    token_version BIGINT NOT NULL DEFAULT 0,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE ssh_keys (
    id          UUID PRIMARY KEY,
    user_id     UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    key_type    TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (user_id, fingerprint)
);

CREATE TABLE egress_ips (
    id          UUID PRIMARY KEY,
    label       TEXT NOT NULL,
    ip_address  TEXT NOT NULL,
    provider    TEXT NOT NULL,
    tunnel_type TEXT NOT NULL CHECK (tunnel_type IN ('wireguard', 'proxy')),
    settings    JSONB NOT NULL,
    last_test   JSONB,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE hosts (
    id                UUID PRIMARY KEY,
    short_id          TEXT NOT NULL UNIQUE,
    user_id           UUID REFERENCES users(id) ON DELETE SET NULL,
    status            TEXT NOT NULL,
    status_reason     TEXT,
    memory_mb         BIGINT NOT NULL,
    cpus              DOUBLE PRECISION NOT NULL,
    pids_limit        BIGINT NOT NULL,
    ssh_password_hash TEXT NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX hosts_user ON hosts (user_id);

CREATE TABLE bindings (
    id           UUID PRIMARY KEY,
    host_id      UUID NOT NULL UNIQUE REFERENCES hosts(id) ON DELETE CASCADE,
    egress_ip_id UUID NOT NULL REFERENCES egress_ips(id),
    created_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX bindings_egress ON bindings (egress_ip_id);

CREATE TABLE tasks (
    id          UUID PRIMARY KEY,
    kind        TEXT NOT NULL,
    host_id     UUID,
    status      TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    progress    TEXT,
    error       TEXT,
    payload     JSONB NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    created_by  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    started_at  TIMESTAMPTZ,
    finished_at TIMESTAMPTZ
);
CREATE INDEX tasks_status ON tasks (status, id);
CREATE INDEX tasks_host ON tasks (host_id);

CREATE TABLE events (
    id          UUID PRIMARY KEY,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id   TEXT,
    user_id     UUID,
    host_id     UUID,
    source_ip   TEXT,
    details     JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX events_created ON events (created_at);
CREATE INDEX events_user ON events (user_id);
CREATE INDEX events_host ON events (host_id);

CREATE TABLE api_tokens (
    id           UUID PRIMARY KEY,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    abilities    JSONB NOT NULL,
    created_by   TEXT NOT NULL,
    expires_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL
);
