-- 0005 (issue 6): what the console mints for the gate, and what was delivered by any path.
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
