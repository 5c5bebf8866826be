-- The route table (src/routes.rs): host pattern + path prefix -> plane, endpoint and target, for
-- Envoys that send no context extensions (Istio's envoyExtAuthzGrpc provider). `deployment` is
-- PROJECT/SLUG on the data plane; `project` pins a control route to one project (NULL: read
-- from the path).
CREATE TABLE routes (
    id               BIGSERIAL PRIMARY KEY,
    organization_id  BIGINT NOT NULL REFERENCES organizations(id),
    host             TEXT NOT NULL,
    path_prefix      TEXT NOT NULL,
    plane            TEXT NOT NULL CHECK (plane IN ('data', 'control')),
    endpoint         TEXT NOT NULL CHECK (endpoint IN ('public', 'private')),
    deployment       TEXT,
    project          TEXT,
    created_at       BIGINT NOT NULL,
    UNIQUE (organization_id, host, path_prefix),
    CHECK ((plane = 'data') = (deployment IS NOT NULL)),
    CHECK (plane = 'control' OR project IS NULL)
);
