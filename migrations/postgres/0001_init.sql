-- keyward schema (PostgreSQL). Times are Unix seconds, flags 0/1, so one set of queries serves
-- SQLite and PostgreSQL through sqlx's Any driver.

CREATE TABLE organizations (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE principals (
    id               BIGSERIAL PRIMARY KEY,
    organization_id  BIGINT NOT NULL REFERENCES organizations(id),
    kind             TEXT NOT NULL CHECK (kind IN ('owner', 'member', 'application')),
    name             TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    UNIQUE (organization_id, kind, name)
);
CREATE UNIQUE INDEX principals_one_owner ON principals(organization_id) WHERE kind = 'owner';

CREATE TABLE projects (
    id               BIGSERIAL PRIMARY KEY,
    organization_id  BIGINT NOT NULL REFERENCES organizations(id),
    slug             TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    UNIQUE (organization_id, slug)
);

CREATE TABLE deployments (
    id            BIGSERIAL PRIMARY KEY,
    project_id    BIGINT NOT NULL REFERENCES projects(id),
    slug          TEXT NOT NULL,
    model         TEXT NOT NULL,
    public_auth   BIGINT NOT NULL DEFAULT 1 CHECK (public_auth IN (0, 1)),
    private_auth  BIGINT NOT NULL DEFAULT 1 CHECK (private_auth IN (0, 1)),
    created_at    BIGINT NOT NULL,
    UNIQUE (project_id, slug)
);

-- One row per key. `secret_hash` is the argon2id PHC string; the secret itself is never stored.
-- Control keys name their project in `control_project` (NULL: the whole organization).
CREATE TABLE api_keys (
    id               TEXT PRIMARY KEY,
    principal_id     BIGINT NOT NULL REFERENCES principals(id),
    plane            TEXT NOT NULL CHECK (plane IN ('data', 'control')),
    control_project  TEXT,
    name             TEXT NOT NULL,
    description      TEXT NOT NULL,
    secret_hash      TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT,
    revoked_at       BIGINT,
    last_used_at     BIGINT
);

-- A data key's scope: one deployment, or a whole project when `deployment` is ''.
CREATE TABLE api_key_targets (
    key_id      TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    project     TEXT NOT NULL,
    deployment  TEXT NOT NULL,
    PRIMARY KEY (key_id, project, deployment)
);
CREATE INDEX api_key_targets_by_project ON api_key_targets(project);

-- Every admin write appends here; replicas follow it to invalidate their caches.
CREATE TABLE changes (
    id          BIGSERIAL PRIMARY KEY,
    kind        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
