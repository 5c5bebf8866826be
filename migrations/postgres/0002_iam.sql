-- IAM (PostgreSQL): custom permission sets, policies (rules as JSON, the same text on both
-- backends), and workload ids so control routes on /api/workloads/:id resolve their project.

CREATE TABLE permission_sets (
    id               BIGSERIAL PRIMARY KEY,
    organization_id  BIGINT NOT NULL REFERENCES organizations(id),
    name             TEXT NOT NULL,
    description      TEXT NOT NULL,
    -- JSON: {"actions": [...], "includes": [...]}
    body             TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    UNIQUE (organization_id, name)
);

-- A policy is attached to at most one principal; NULL means detached (it grants nothing).
CREATE TABLE policies (
    id               BIGSERIAL PRIMARY KEY,
    organization_id  BIGINT NOT NULL REFERENCES organizations(id),
    name             TEXT NOT NULL,
    description      TEXT NOT NULL,
    principal_id     BIGINT REFERENCES principals(id),
    -- JSON: [{"scope": ..., "permission_sets": [...], "conditions": {...}}]
    rules            TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    UNIQUE (organization_id, name)
);
CREATE INDEX policies_by_principal ON policies(principal_id);

CREATE TABLE workloads (
    id          TEXT PRIMARY KEY,
    project_id  BIGINT NOT NULL REFERENCES projects(id),
    created_at  BIGINT NOT NULL
);
