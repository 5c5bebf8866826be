-- Lifecycle (SQLite): descriptions on projects and deployments, a deployment's public endpoint
-- that can be removed (private-only deployments), and workload ids unique per project instead
-- of across the organization (a global id let one project probe another's ids).

ALTER TABLE projects ADD COLUMN description TEXT NOT NULL DEFAULT '';
ALTER TABLE deployments ADD COLUMN description TEXT NOT NULL DEFAULT '';
-- 0: the public listener answers 404 for this deployment, as for one that is not there.
ALTER TABLE deployments ADD COLUMN public_endpoint INTEGER NOT NULL DEFAULT 1
    CHECK (public_endpoint IN (0, 1));

-- SQLite cannot change a primary key in place: copy every row into the new shape.
CREATE TABLE workloads_per_project (
    project_id  INTEGER NOT NULL REFERENCES projects(id),
    id          TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (project_id, id)
);
INSERT INTO workloads_per_project (project_id, id, created_at)
    SELECT project_id, id, created_at FROM workloads;
DROP TABLE workloads;
ALTER TABLE workloads_per_project RENAME TO workloads;
CREATE INDEX workloads_by_id ON workloads(id);
