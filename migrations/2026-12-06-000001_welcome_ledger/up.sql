-- Welcome mails only to verified addresses, once per uid ever.

-- The address the identity provider last vouched for (a token with
-- email_verified: true). The profile's own `email` is whatever the client
-- typed; a welcome mail only ever goes to this one.
ALTER TABLE users ADD COLUMN verified_email text CHECK (char_length(verified_email) <= 254);

-- One row per Firebase uid that was ever claimed a welcome mail. No uid or
-- address in the clear: `uid_hash` is SHA-256('trellis:welcome:uid:' || uid)
-- (kept forever, so a deleted and re-created account is not welcomed twice;
-- a uid is a random identifier, its digest says nothing about a person),
-- `recipient_hash` an HMAC of the lower-cased address under a server key,
-- dropped once the per-address window has passed.
CREATE TABLE welcome_mails (
    uid_hash       bytea       PRIMARY KEY,
    recipient_hash bytea,
    -- The attempt holding the send: its job and that job's lease number.
    holder_job     uuid        NOT NULL,
    holder_lease   bigint      NOT NULL,
    claimed_at     timestamptz NOT NULL DEFAULT now(),
    sent_at        timestamptz
);

CREATE INDEX welcome_mails_recipient_idx ON welcome_mails (recipient_hash, claimed_at)
    WHERE recipient_hash IS NOT NULL;

-- Users who existed before this ledger got their welcome mail (or none)
-- under the earlier rules: record them as welcomed so that a verified token
-- now does not welcome them again.
INSERT INTO welcome_mails (uid_hash, holder_job, holder_lease, claimed_at, sent_at)
SELECT sha256(convert_to('trellis:welcome:uid:' || firebase_uid, 'UTF8')),
       '00000000-0000-0000-0000-000000000000', 0, created_at, created_at
  FROM users
 WHERE email IS NOT NULL
ON CONFLICT DO NOTHING;
