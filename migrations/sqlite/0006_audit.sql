-- The audit log (src/audit.rs): one row per admin write, inserted in the write's own transaction,
-- and one per denied admin call. Never a token or a hash: `summary` is built from names, scopes
-- and times only. `principal`/`key_id` are empty and `peer` is `local` for writes made on the
-- store directly (`keyward init`, `init --recover`). Pruned after `audit.retention_days`.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    principal   TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    peer        TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    summary     TEXT NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('ok', 'denied'))
);
CREATE INDEX audit_log_at ON audit_log (at);
