-- Users, their FCM push tokens, and the transactional outbox.

CREATE TABLE users (
    -- UUID v7, minted by the application (time-ordered, index-friendly).
    id           uuid        PRIMARY KEY,
    firebase_uid text        NOT NULL UNIQUE
                             CHECK (char_length(firebase_uid) BETWEEN 1 AND 128),
    email        text        CHECK (char_length(email) <= 254),
    display_name text        CHECK (char_length(display_name) BETWEEN 1 AND 100),
    photo_url    text        CHECK (char_length(photo_url) <= 2048),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE push_tokens (
    id           uuid        PRIMARY KEY,
    token        text        NOT NULL UNIQUE
                             CHECK (char_length(token) BETWEEN 1 AND 4096),
    platform     text        NOT NULL CHECK (platform IN ('ios', 'android', 'web')),
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now()
);

-- Listing a user's tokens in keyset order, and the cascade on user delete.
CREATE INDEX push_tokens_user_order_idx ON push_tokens (user_id, created_at, id);

CREATE TABLE outbox (
    -- Insertion order; the relay publishes in this order.
    seq           bigserial   PRIMARY KEY,
    -- The event's id (consumers deduplicate on it).
    event_id      uuid        NOT NULL UNIQUE,
    topic         text        NOT NULL,
    event_type    text        NOT NULL,
    payload       jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    -- A relay's lease on the row while it publishes it.
    claimed_until timestamptz,
    -- How many times a relay claimed it (more than one means a retry).
    attempts      integer     NOT NULL DEFAULT 0,
    -- Set when a row could not be decoded and was set aside.
    last_error    text
);

CREATE INDEX outbox_unpublished_idx ON outbox (seq) WHERE published_at IS NULL;
CREATE INDEX outbox_published_at_idx ON outbox (published_at) WHERE published_at IS NOT NULL;

-- Wake relays as soon as a transaction appends events (one notification per
-- statement; Postgres folds duplicates within a transaction).
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('trellis_outbox', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
