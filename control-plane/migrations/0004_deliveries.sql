-- 0004 (issue 6): what the console mints for the gate, and what was delivered by any path.
-- Times are unix seconds.

-- Every transfer token the console mints for a package or an external link, by token id (the
-- token itself is never stored). The gate's ledger (web::gate_ledger) looks a grant's token id
-- up here to charge an external link's byte accounting and to write delivery receipts.
CREATE TABLE minted_tokens (
    token_id BLOB PRIMARY KEY CHECK (length(token_id) = 16),
    package_id INTEGER NOT NULL REFERENCES packages (id) ON DELETE CASCADE,
    -- The user the token names (for a link: the sender, whose outbox it reads).
    user_id INTEGER NOT NULL,
    -- Set for a token minted from an external link's page.
    link_id INTEGER REFERENCES external_links (id) ON DELETE CASCADE,
    direction TEXT NOT NULL CHECK (direction IN ('download', 'upload')),
    expires_at INTEGER NOT NULL
);
CREATE INDEX minted_tokens_expiry ON minted_tokens (expires_at);

-- Delivery receipts: one row per completed download of one file of a package, by a user or an
-- external link, over haul or HTTPS. The sender's package page lists them.
CREATE TABLE package_downloads (
    id INTEGER PRIMARY KEY,
    package_id INTEGER NOT NULL REFERENCES packages (id) ON DELETE CASCADE,
    -- Exactly one of user_id / link_id is set.
    user_id INTEGER,
    link_id INTEGER REFERENCES external_links (id) ON DELETE CASCADE,
    file_name TEXT NOT NULL,
    via TEXT NOT NULL CHECK (via IN ('haul', 'https')),
    at INTEGER NOT NULL,
    CHECK ((user_id IS NULL) != (link_id IS NULL))
);
CREATE INDEX package_downloads_package ON package_downloads (package_id, id);

-- Per-package limits the sender chose within the admin maxima; no row: no limits.
CREATE TABLE package_limits (
    package_id INTEGER PRIMARY KEY REFERENCES packages (id) ON DELETE CASCADE,
    -- NULL: the package does not expire.
    expires_at INTEGER,
    -- Completed downloads allowed per recipient and file; NULL: no limit.
    max_downloads INTEGER CHECK (max_downloads IS NULL OR max_downloads > 0),
    -- Remove the files once every recipient has downloaded every file.
    delete_after_download INTEGER NOT NULL DEFAULT 0 CHECK (delete_after_download IN (0, 1)),
    -- When the sweeper removed the files; NULL while they are kept.
    files_removed_at INTEGER
);
CREATE INDEX package_limits_sweep ON package_limits (files_removed_at, expires_at);
