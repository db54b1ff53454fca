-- Conference bans: a host's signed "ban" call action, per room and banned member key.
-- The room's calls refuse that member until a host unbans it. Public keys and signed
-- statements only (DESIGN §1.2): a call's live state is kept in memory, never stored.
CREATE TABLE conference_bans (
    space_id TEXT NOT NULL REFERENCES spaces(space_id),
    room_id  TEXT NOT NULL,
    member   BLOB NOT NULL,
    action   BLOB NOT NULL,
    PRIMARY KEY (space_id, room_id, member)
) STRICT, WITHOUT ROWID;
