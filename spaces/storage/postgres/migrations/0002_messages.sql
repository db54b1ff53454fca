-- Chat messages and stories (as SQLite's 0002): ciphertext plus what the server needs to
-- order, route and expire them (DESIGN §5).

-- The last sequence assigned in each room, apart from the messages so a room whose latest
-- messages expired never hands out a sequence twice. Its row is also the room's write lock:
-- every instance assigns a room's sequences under it, so they stay gap-free.
CREATE TABLE room_seqs (
    space_id text   NOT NULL REFERENCES spaces(space_id),
    room_id  text   NOT NULL,
    last_seq bigint NOT NULL,
    PRIMARY KEY (space_id, room_id)
);

CREATE TABLE messages (
    space_id   text             NOT NULL REFERENCES spaces(space_id),
    room_id    text             NOT NULL,
    seq        bigint           NOT NULL,
    sender     bytea            NOT NULL,
    client_id  bytea            NOT NULL,
    epoch      bigint           NOT NULL,
    ttl        bigint           NOT NULL,
    sent_at    double precision NOT NULL,
    expires_at double precision,
    box        bytea            NOT NULL,
    PRIMARY KEY (space_id, room_id, seq)
);
-- Idempotent retries: one message per (room, client message id, sender).
CREATE UNIQUE INDEX messages_by_client_id ON messages(space_id, room_id, client_id, sender);
CREATE INDEX messages_by_expiry ON messages(expires_at) WHERE expires_at IS NOT NULL;

-- Story images are read in chunks (substring): stored uncompressed, out of line.
CREATE TABLE stories (
    story_id   text             PRIMARY KEY,
    space_id   text             NOT NULL REFERENCES spaces(space_id),
    room_id    text             NOT NULL,
    sender     bytea            NOT NULL,
    epoch      bigint           NOT NULL,
    ttl        bigint           NOT NULL,
    posted_at  double precision NOT NULL,
    expires_at double precision NOT NULL,
    meta       bytea            NOT NULL,
    thumb      bytea            NOT NULL,
    image      bytea            NOT NULL
);
ALTER TABLE stories ALTER COLUMN image SET STORAGE EXTERNAL;
ALTER TABLE stories ALTER COLUMN thumb SET STORAGE EXTERNAL;
CREATE INDEX stories_by_room ON stories(space_id, room_id, posted_at);
CREATE INDEX stories_by_expiry ON stories(expires_at);
