-- Nothing on SQLite: PostgreSQL 0005 gives the shared log of call inputs a sequence per room
-- (rebuilding a replica of a call on another instance) and a table of instance heartbeats, while one
-- SQLite instance keeps its calls in memory. Kept so that both engines number the same
-- migrations.
SELECT 1;
