-- Spaces, their signed record chains, invite seals and key envelopes (as SQLite's 0001).
-- Only ciphertext, public keys and signed records live here (DESIGN §1.2).
CREATE TABLE spaces (
    space_id   text   PRIMARY KEY,
    created_at bigint NOT NULL
);

CREATE TABLE records (
    space_id text   NOT NULL REFERENCES spaces(space_id),
    seq      bigint NOT NULL,
    hash     bytea  NOT NULL,
    data     bytea  NOT NULL,
    PRIMARY KEY (space_id, seq)
);

CREATE TABLE invites (
    invite_id text   PRIMARY KEY,
    space_id  text   NOT NULL REFERENCES spaces(space_id),
    epoch     bigint NOT NULL,
    sealed    bytea  NOT NULL,
    preview   bytea  NOT NULL DEFAULT ''::bytea
);
CREATE INDEX invites_by_space ON invites(space_id);

CREATE TABLE envelopes (
    space_id  text   NOT NULL REFERENCES spaces(space_id),
    scope     text   NOT NULL,
    epoch     bigint NOT NULL,
    recipient bytea  NOT NULL,
    sender    bytea  NOT NULL,
    box       bytea  NOT NULL,
    PRIMARY KEY (space_id, scope, recipient, epoch)
);
