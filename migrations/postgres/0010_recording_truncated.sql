-- Whether a recording stopped at its size cap (SLUICE_RECORDING_MAX_MB) while the session went
-- on: what it holds is the session's beginning.
ALTER TABLE recordings ADD COLUMN truncated BOOLEAN NOT NULL DEFAULT FALSE;
