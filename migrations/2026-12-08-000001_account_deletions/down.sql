DROP INDEX IF EXISTS outbox_subject_uid_idx;
DROP TABLE IF EXISTS account_deletions;
