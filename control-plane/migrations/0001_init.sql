-- 0001: issue 5 (session set-up) fills this in: users, their restrictions and keys, token uses.
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
