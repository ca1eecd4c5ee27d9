-- edge::write, last in the transaction: the events (types, subjects and data in the :event_* variables, one
-- event, or two separated by '|'), then the commit; after it, the events stamped with their seq, and published
-- (marked, in a transaction that would send them to Redis before its commit).
WITH inserted AS (
    INSERT INTO events (type, workspace_id, subject_kind, subject_id, actor, data)
    SELECT t, w, k, i, a, d::jsonb
    FROM unnest(string_to_array(:event_types, '|'), ARRAY['bench', 'bench'], string_to_array(:event_kinds, '|'),
                string_to_array(:event_subjects, '|'), ARRAY['bench', 'bench'], string_to_array(:event_data, '|'))
         WITH ORDINALITY AS e(t, w, k, i, a, d, n)
    WHERE t IS NOT NULL ORDER BY n
    RETURNING pos)
SELECT array_agg(pos)::text AS own FROM inserted \gset
COMMIT;
SELECT events_stamp(:own::int8[]);
BEGIN;
SELECT seq, id::text, type, (extract(epoch from occurred_at) * 1000)::int8, workspace_id, subject_kind, subject_id,
       actor, data
FROM events_publish(:own::int8[], 200);
COMMIT;
