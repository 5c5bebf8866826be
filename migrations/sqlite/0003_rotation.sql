-- Rotation with a grace period: the previous secret's hash stays valid until
-- previous_valid_until (Unix seconds), never past the key's own expiry.
ALTER TABLE api_keys ADD COLUMN previous_secret_hash TEXT;
ALTER TABLE api_keys ADD COLUMN previous_valid_until INTEGER;

-- Which replica recorded a change: a replica already applied its own changes when it made
-- them, so it skips them in the feed (no needless eviction of what it just cached).
ALTER TABLE changes ADD COLUMN origin TEXT NOT NULL DEFAULT '';
