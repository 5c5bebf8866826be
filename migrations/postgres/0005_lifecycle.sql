-- Lifecycle (PostgreSQL): descriptions on projects and deployments, a deployment's public
-- endpoint that can be removed (private-only deployments), and workload ids unique per project
-- instead of across the organization (a global id let one project probe another's ids).

ALTER TABLE projects ADD COLUMN description TEXT NOT NULL DEFAULT '';
ALTER TABLE deployments ADD COLUMN description TEXT NOT NULL DEFAULT '';
-- 0: the public listener answers 404 for this deployment, as for one that is not there.
ALTER TABLE deployments ADD COLUMN public_endpoint BIGINT NOT NULL DEFAULT 1
    CHECK (public_endpoint IN (0, 1));

ALTER TABLE workloads DROP CONSTRAINT workloads_pkey;
ALTER TABLE workloads ADD PRIMARY KEY (project_id, id);
CREATE INDEX workloads_by_id ON workloads(id);
