-- Chat messages and stories: ciphertext plus what the server needs to order, route and
-- expire them (DESIGN §5). Deleted rows are zeroed (secure_delete) and the WAL truncated.

-- The last sequence assigned in each room. Kept apart from the messages so a room whose
-- latest messages expired never hands out a sequence twice.
CREATE TABLE room_seqs (
    space_id TEXT    NOT NULL REFERENCES spaces(space_id),
    room_id  TEXT    NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (space_id, room_id)
) STRICT, WITHOUT ROWID;

-- WITHOUT ROWID: rows live in the primary key's B-tree, appended in seq order.
CREATE TABLE messages (
    space_id   TEXT    NOT NULL REFERENCES spaces(space_id),
    room_id    TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    sender     BLOB    NOT NULL,
    client_id  BLOB    NOT NULL,
    epoch      INTEGER NOT NULL,
    ttl        INTEGER NOT NULL,
    sent_at    REAL    NOT NULL,
    expires_at REAL,
    box        BLOB    NOT NULL,
    PRIMARY KEY (space_id, room_id, seq)
) STRICT, WITHOUT ROWID;
-- Idempotent retries: one message per (room, client message id, sender). Client ids are
-- random (a clock in them would link a member's memberships), so a commit of n messages
-- writes up to n leaves of this index: bounded by the group commit's size.
CREATE UNIQUE INDEX messages_by_client_id ON messages(space_id, room_id, client_id, sender);
CREATE INDEX messages_by_expiry ON messages(expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE stories (
    story_id   TEXT    PRIMARY KEY,
    space_id   TEXT    NOT NULL REFERENCES spaces(space_id),
    room_id    TEXT    NOT NULL,
    sender     BLOB    NOT NULL,
    epoch      INTEGER NOT NULL,
    ttl        INTEGER NOT NULL,
    posted_at  REAL    NOT NULL,
    expires_at REAL    NOT NULL,
    meta       BLOB    NOT NULL,
    thumb      BLOB    NOT NULL,
    image      BLOB    NOT NULL
) STRICT;
CREATE INDEX stories_by_room ON stories(space_id, room_id, posted_at);
CREATE INDEX stories_by_expiry ON stories(expires_at);
