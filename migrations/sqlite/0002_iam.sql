-- IAM (SQLite): custom permission sets, policies (rules as JSON, the same text on both
-- backends), and workload ids so control routes on /api/workloads/:id resolve their project.

CREATE TABLE permission_sets (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id),
    name             TEXT NOT NULL,
    description      TEXT NOT NULL,
    -- JSON: {"actions": [...], "includes": [...]}
    body             TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    UNIQUE (organization_id, name)
);

-- A policy is attached to at most one principal; NULL means detached (it grants nothing).
CREATE TABLE policies (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id),
    name             TEXT NOT NULL,
    description      TEXT NOT NULL,
    principal_id     INTEGER REFERENCES principals(id),
    -- JSON: [{"scope": ..., "permission_sets": [...], "conditions": {...}}]
    rules            TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    UNIQUE (organization_id, name)
);
CREATE INDEX policies_by_principal ON policies(principal_id);

CREATE TABLE workloads (
    id          TEXT PRIMARY KEY,
    project_id  INTEGER NOT NULL REFERENCES projects(id),
    created_at  INTEGER NOT NULL
);
