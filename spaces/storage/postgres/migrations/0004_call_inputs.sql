-- The ordered log of call inputs (spaces.events): several instances keep replicas of each
-- call's state and apply the same inputs in PostgreSQL's commit order. A row is read by the
-- instances that hear of it (NOTIFY carries only its id) and deleted a minute later. It
-- holds signed call actions, public member keys and roles, and call signals sealed end to
-- end: nothing a member wrote in the clear.
CREATE TABLE call_inputs (
    id         bigserial   PRIMARY KEY,
    body       bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
