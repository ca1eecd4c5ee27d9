-- What store::settle reads back, once settle_check let the statement stand (the key was recorded here): the
-- events' pos.
SELECT settle_check(EXISTS (SELECT 1 FROM record), true), ARRAY(SELECT pos FROM inserted_events ORDER BY pos)::text
    AS own
\gset
