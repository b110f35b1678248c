-- Uploads: a row per presigned upload, pending until completed; an avatar
-- replaced by a newer one is kept (status 'replaced') for a grace period,
-- then deleted with its object. Rows go with their user (the objects go
-- through the deletion saga).
CREATE TABLE uploads (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose       text NOT NULL,
    object_key    text NOT NULL UNIQUE,
    content_type  text NOT NULL,
    size          bigint NOT NULL CHECK (size >= 0),
    status        text NOT NULL CHECK (status IN ('pending', 'completed', 'replaced')),
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    completed_at  timestamptz,
    replaced_at   timestamptz
);

CREATE INDEX uploads_by_user ON uploads (user_id, created_at DESC);
CREATE INDEX uploads_pending ON uploads (expires_at) WHERE status = 'pending';
CREATE INDEX uploads_replaced ON uploads (replaced_at) WHERE status = 'replaced';
