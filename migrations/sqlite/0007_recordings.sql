-- Terminal sessions recorded as asciicast v2 (gzip files under <data dir>/recordings), one row
-- per recorded channel. No foreign keys: a recording outlives its host and its user until the
-- retention removes it.
CREATE TABLE recordings (
    id          BLOB PRIMARY KEY,
    session_id  BLOB NOT NULL,
    host_id     BLOB NOT NULL,
    short_id    TEXT NOT NULL,
    username    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    file        TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('recording', 'stored', 'failed')),
    with_input  BOOLEAN NOT NULL,
    bytes       BIGINT NOT NULL DEFAULT 0,
    started_at  TEXT NOT NULL,
    ended_at    TEXT
);
CREATE INDEX recordings_started ON recordings (started_at);
CREATE INDEX recordings_host ON recordings (host_id);
