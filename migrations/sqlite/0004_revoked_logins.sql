-- Login tokens (JWTs) revoked one by one through POST /v1/auth/logout, by their id, kept until
-- they would have expired anyway.
CREATE TABLE revoked_logins (
    jti        BLOB PRIMARY KEY,
    expires_at TEXT NOT NULL
);
