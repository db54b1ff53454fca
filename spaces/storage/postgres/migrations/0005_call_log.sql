-- Calls that survive an instance (issue 11): the ordered log of call inputs becomes a log per
-- room, from which an instance without a replica of a call (it started mid-call, or
-- missed notifications) rebuilds it (spaces/call_log.py says what is kept and why).
--
-- Each input names its room and gets the next sequence number, taken from call_rooms
-- under a row lock held until commit: the inputs of a room therefore commit, and are notified, in
-- sequence order, and a replica that sees a number jump knows it missed one. Signals are
-- deleted after a minute, as before; state-changing inputs stay until their call has ended:
-- the input that ended it then carries a snapshot of the idle call (``base``), and every
-- earlier row of the room is deleted a minute later. Rows of the old log have no room: dropped (they were
-- ephemeral; the instances of the previous version replay nothing).
DELETE FROM call_inputs;
ALTER TABLE call_inputs
    ADD COLUMN space_id text   NOT NULL,
    ADD COLUMN room_id  text   NOT NULL,
    ADD COLUMN seq      bigint NOT NULL,
    ADD COLUMN state    boolean NOT NULL,  -- false: a signal, which changes nothing
    ADD COLUMN base     bytea;             -- a snapshot of the idle call after this input
CREATE UNIQUE INDEX call_inputs_room_seq ON call_inputs (space_id, room_id, seq);

CREATE TABLE call_rooms (
    space_id text   NOT NULL,
    room_id  text   NOT NULL,
    seq      bigint NOT NULL,
    PRIMARY KEY (space_id, room_id)
);

-- Every instance writes its id and the time here every few seconds; the seats of calls held
-- by sessions of an instance silent for [conference] seat_grace_seconds are freed by the
-- others. Random ids and times only.
CREATE TABLE instances (
    instance text        PRIMARY KEY,
    seen_at  timestamptz NOT NULL
);
