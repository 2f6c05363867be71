-- 0002 (issue 6): the web console. Console login for the users of 0001, server-side sessions,
-- API tokens, workgroups and the audit log. Times are unix seconds (UTC); booleans are 0/1.
-- The per-user restrictions live in 0001's `users`/`user_ip_allow`; console settings are keys in
-- 0001's `settings` (store::web_settings).

-- A user's console account. A user of 0001 without a row here cannot sign in to the console
-- (transfers by token still work).
CREATE TABLE web_accounts (
    user_id INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    -- argon2id, PHC string.
    password_hash TEXT NOT NULL,
    is_admin INTEGER NOT NULL DEFAULT 0 CHECK (is_admin IN (0, 1)),
    -- Set for the first admin and after an admin reset: the next sign-in must change it.
    must_change_password INTEGER NOT NULL DEFAULT 1 CHECK (must_change_password IN (0, 1)),
    email TEXT NOT NULL DEFAULT '',
    full_name TEXT NOT NULL DEFAULT '',
    -- TOTP secret (20 bytes) once confirmed; NULL: no second factor.
    totp_secret BLOB,
    -- A secret being set up, not yet confirmed with a code.
    totp_pending BLOB,
    -- The last TOTP step accepted (a code is good once).
    totp_last_step INTEGER,
    password_changed_at INTEGER NOT NULL,
    last_login_at INTEGER
);

-- Server-side sessions. Only the SHA-256 of the session id is stored.
CREATE TABLE web_sessions (
    id_hash BLOB PRIMARY KEY CHECK (length(id_hash) = 32),
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    ip TEXT NOT NULL,
    -- 1 while the password was right but the second factor is still owed.
    is_partial INTEGER NOT NULL DEFAULT 0 CHECK (is_partial IN (0, 1))
);
CREATE INDEX web_sessions_user ON web_sessions (user_id);

-- API tokens for scripts. Only the SHA-256 of the secret is stored.
CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    secret_hash BLOB NOT NULL UNIQUE CHECK (length(secret_hash) = 32),
    -- Space-separated scopes: read, write, admin.
    scopes TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    last_used_at INTEGER,
    revoked_at INTEGER
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

CREATE TABLE workgroups (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL
);

-- Members; is_admin marks the workgroup's admins (who also need 0001's workgroup_admin flag).
CREATE TABLE workgroup_members (
    workgroup_id INTEGER NOT NULL REFERENCES workgroups (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    is_admin INTEGER NOT NULL DEFAULT 0 CHECK (is_admin IN (0, 1)),
    PRIMARY KEY (workgroup_id, user_id)
);
CREATE INDEX workgroup_members_user ON workgroup_members (user_id);

-- Who did what, when and from where. Never holds a secret (passwords, tokens, link ids).
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    -- The acting user's name as it was; NULL for the system or an unknown user.
    actor TEXT,
    action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'refused', 'failed')),
    ip TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_actor ON audit_log (actor, at);

-- Packages: a title, a note and files, sent to users (directly or through a workgroup).
-- The sender uploads into storage/SENDER/outbox/PUBLIC_ID/; sending hard-links the files into
-- storage/RECIPIENT/inbox/PUBLIC_ID/ of each recipient, so transfer tokens stay confined to
-- their user's own storage root.
CREATE TABLE packages (
    id INTEGER PRIMARY KEY,
    -- 128 random bits, hex: the package id in paths and in transfer tokens.
    public_id TEXT NOT NULL UNIQUE CHECK (length(public_id) = 32),
    sender_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    -- NULL while the sender is still uploading (a draft).
    sent_at INTEGER
);
CREATE INDEX packages_sender ON packages (sender_id, id);

-- Recipients, resolved to users; `via` is '' for a direct recipient or the workgroup's name.
CREATE TABLE package_recipients (
    package_id INTEGER NOT NULL REFERENCES packages (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    via TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (package_id, user_id)
);
CREATE INDEX package_recipients_user ON package_recipients (user_id, package_id);
