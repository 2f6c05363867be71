-- 0001 (issue 5): users and their restrictions, their SSH keys, single-use token bookkeeping
-- (uses and resume grants), and the admin settings tokens take their caps from.
-- Times are unix seconds (UTC). Booleans are 0/1. docs/STORE.md describes every table.

-- One row per user. The storage root is DATA_DIR/storage/<name>; names are validated by
-- users::UserName (letters, digits, '_', '-', '.', starting with a letter or digit).
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    -- The account stops working at this instant; NULL: never.
    expires_at INTEGER,
    upload_only INTEGER NOT NULL DEFAULT 0 CHECK (upload_only IN (0, 1)),
    download_only INTEGER NOT NULL DEFAULT 0 CHECK (download_only IN (0, 1)),
    may_send_external INTEGER NOT NULL DEFAULT 0 CHECK (may_send_external IN (0, 1)),
    may_forward INTEGER NOT NULL DEFAULT 0 CHECK (may_forward IN (0, 1)),
    workgroup_admin INTEGER NOT NULL DEFAULT 0 CHECK (workgroup_admin IN (0, 1)),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    CHECK (NOT (upload_only = 1 AND download_only = 1))
);

-- IP allow-lists. No row for a (user, purpose): any address is allowed for that purpose.
CREATE TABLE user_ip_allow (
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose TEXT NOT NULL CHECK (purpose IN ('login', 'upload', 'download')),
    -- Canonical CIDR text (users::Cidr's Display), e.g. 10.0.0.0/8 or 2001:db8::/32.
    cidr TEXT NOT NULL,
    PRIMARY KEY (user_id, purpose, cidr)
);

-- A user's own SSH public keys (for `haul cp`). One key is one user's only.
CREATE TABLE user_ssh_keys (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The key type as in authorized_keys, e.g. ssh-ed25519.
    algorithm TEXT NOT NULL,
    -- The public key blob, standard base64 as in authorized_keys.
    key_base64 TEXT NOT NULL,
    comment TEXT NOT NULL DEFAULT '',
    -- SHA256:<base64 without padding> of the blob, as ssh-keygen -l prints it.
    fingerprint TEXT NOT NULL UNIQUE,
    added_at INTEGER NOT NULL
);
CREATE INDEX user_ssh_keys_user ON user_ssh_keys (user_id);

-- Single-use tokens: one row from the first granted use. 'active' while a transfer holds it
-- (holder: the serving process's instance id, so a row left active by a process that died is
-- seen as interrupted), 'interrupted' when it may resume, 'complete' when it is spent.
CREATE TABLE token_uses (
    token_id BLOB PRIMARY KEY CHECK (length(token_id) = 16),
    user_name TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('download', 'upload')),
    state TEXT NOT NULL CHECK (state IN ('active', 'interrupted', 'complete')),
    holder BLOB NOT NULL,
    uses INTEGER NOT NULL DEFAULT 1,
    first_used_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    -- The token's own expiry: rows past it can be purged.
    token_expires_at INTEGER NOT NULL
);

-- Resume grants: an interrupted single-use transfer may resume only for the path it was
-- granted, and the partial it left (bytes known good) is recorded here.
CREATE TABLE token_resume_grants (
    token_id BLOB NOT NULL REFERENCES token_uses (token_id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    partial_bytes INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (token_id, path)
);

-- Admin settings as typed key/value rows (store::settings knows each key, its type and its
-- default; an absent row means the default). Later issues add keys, not columns.
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
