-- What store::settle reads back: whether the key was recorded, and the events' pos.
SELECT EXISTS (SELECT 1 FROM record) AS recorded, ARRAY(SELECT pos FROM inserted_events ORDER BY pos)::text AS own
\gset
