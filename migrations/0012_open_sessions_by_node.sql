-- Issue 21: every node looks for the open sessions of lost nodes every 2 s; this keeps that (and
-- the restart's own-orphans query) to the open sessions instead of the whole table.
CREATE INDEX sessions_open_by_node ON sessions (node) WHERE ended_at IS NULL;
