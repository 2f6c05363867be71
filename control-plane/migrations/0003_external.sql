-- 0003 (issue 6): external recipients of packages. Each gets a link whose random 256-bit id is
-- e-mailed and never stored: only its SHA-256 is (store::external). Times are unix seconds.

CREATE TABLE external_links (
    id INTEGER PRIMARY KEY,
    package_id INTEGER NOT NULL REFERENCES packages (id) ON DELETE CASCADE,
    email TEXT NOT NULL,
    id_hash BLOB NOT NULL UNIQUE CHECK (length(id_hash) = 32),
    created_at INTEGER NOT NULL,
    -- NULL: no expiry (only allowed together with a download limit).
    expires_at INTEGER,
    -- NULL: no download limit (only allowed together with an expiry).
    max_downloads INTEGER CHECK (max_downloads IS NULL OR max_downloads > 0),
    CHECK (expires_at IS NOT NULL OR max_downloads IS NOT NULL)
);
CREATE INDEX external_links_package ON external_links (package_id);

-- Per link and file: bytes sent by finished responses, and bytes promised to responses still
-- in flight. A request is refused before sending when sent + reserved + its length would pass
-- max_downloads x the file's size, so aborts and Range requests cannot copy more than allowed.
CREATE TABLE external_link_bytes (
    link_id INTEGER NOT NULL REFERENCES external_links (id) ON DELETE CASCADE,
    file_name TEXT NOT NULL,
    bytes_sent INTEGER NOT NULL DEFAULT 0 CHECK (bytes_sent >= 0),
    bytes_reserved INTEGER NOT NULL DEFAULT 0 CHECK (bytes_reserved >= 0),
    PRIMARY KEY (link_id, file_name)
);
