-- Nothing on SQLite: PostgreSQL's 0004 adds the ordered log of call inputs that several
-- instances share (spaces.events), while one SQLite instance orders its calls in memory.
-- Kept so that both engines number the same migrations.
SELECT 1;
