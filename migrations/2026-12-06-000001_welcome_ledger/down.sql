DROP TABLE IF EXISTS welcome_mails;
ALTER TABLE users DROP COLUMN IF EXISTS verified_email;
