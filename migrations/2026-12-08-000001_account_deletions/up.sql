-- When each uid's account was deleted (its tombstone): a token issued
-- before it proves nothing and creates no user, until it is forgotten
-- once no such token can still be valid.
CREATE TABLE account_deletions (
    firebase_uid text        PRIMARY KEY
                             CHECK (char_length(firebase_uid) BETWEEN 1 AND 128),
    deleted_at   timestamptz NOT NULL
);

CREATE INDEX account_deletions_deleted_at_idx ON account_deletions (deleted_at);

-- The events about one user (every payload names its uid): for the user's
-- data export, and for scrubbing a deleted user's data out of old rows.
CREATE INDEX outbox_subject_uid_idx ON outbox ((payload ->> 'uid'));
