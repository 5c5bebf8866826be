-- Rotation with a grace period: the previous secret's hash stays valid until
-- previous_valid_until (Unix seconds), never past the key's own expiry.
ALTER TABLE api_keys ADD COLUMN previous_secret_hash TEXT;
ALTER TABLE api_keys ADD COLUMN previous_valid_until BIGINT;
