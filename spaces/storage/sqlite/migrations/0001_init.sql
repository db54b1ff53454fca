-- Spaces, their signed record chains, invite seals and key envelopes.
-- Only ciphertext, public keys and signed records live here (DESIGN §1.2).
CREATE TABLE spaces (
    space_id   TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE records (
    space_id TEXT    NOT NULL REFERENCES spaces(space_id),
    seq      INTEGER NOT NULL,
    hash     BLOB    NOT NULL,
    data     BLOB    NOT NULL,
    PRIMARY KEY (space_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE invites (
    invite_id TEXT PRIMARY KEY,
    space_id  TEXT    NOT NULL REFERENCES spaces(space_id),
    epoch     INTEGER NOT NULL,
    sealed    BLOB    NOT NULL,
    preview   BLOB    NOT NULL DEFAULT x''
) STRICT;
CREATE INDEX invites_by_space ON invites(space_id);

CREATE TABLE envelopes (
    space_id  TEXT    NOT NULL REFERENCES spaces(space_id),
    scope     TEXT    NOT NULL,
    epoch     INTEGER NOT NULL,
    recipient BLOB    NOT NULL,
    sender    BLOB    NOT NULL,
    box       BLOB    NOT NULL,
    PRIMARY KEY (space_id, scope, recipient, epoch)
) STRICT, WITHOUT ROWID;
