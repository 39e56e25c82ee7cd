-- Lossless resume for streams that span many generations (a project's). bigserial ids are taken
-- at insert, not at commit, so two transactions can commit their events out of id order, and a
-- reader resuming "after id N" could skip an event that committed after N was read. Each event now
-- records its transaction id: readers emit events in (txid, id) order and only once txid is below
-- the oldest transaction still running, when nothing can appear before them any more.
-- Within one generation, writers hold the generation's row lock, so there id order is commit order.

ALTER TABLE image_events ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX image_events_project_txid_idx ON image_events (project_id, txid, id);
