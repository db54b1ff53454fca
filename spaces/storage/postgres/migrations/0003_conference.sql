-- Conference bans (as SQLite's 0003): a host's signed "ban" call action, per room and
-- banned member key. Public keys and signed statements only (DESIGN §1.2).
CREATE TABLE conference_bans (
    space_id text  NOT NULL REFERENCES spaces(space_id),
    room_id  text  NOT NULL,
    member   bytea NOT NULL,
    action   bytea NOT NULL,
    PRIMARY KEY (space_id, room_id, member)
);
