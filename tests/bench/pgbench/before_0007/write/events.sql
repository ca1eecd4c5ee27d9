-- edge::write, last in the transaction: the events (types, subjects and data in the :event_* variables, one
-- event, or two separated by '|'), then the commit, and the events marked once published.
WITH inserted AS (
    INSERT INTO events (type, workspace_id, subject_kind, subject_id, actor, data, publishing_since)
    SELECT t, w, k, i, a, d::jsonb, CASE WHEN true THEN clock_timestamp() END
    FROM unnest(string_to_array(:event_types, '|'), ARRAY['bench', 'bench'], string_to_array(:event_kinds, '|'),
                string_to_array(:event_subjects, '|'), ARRAY['bench', 'bench'], string_to_array(:event_data, '|'))
         WITH ORDINALITY AS e(t, w, k, i, a, d, n)
    WHERE t IS NOT NULL ORDER BY n
    RETURNING seq, id::text, type, (extract(epoch from occurred_at) * 1000)::int8, workspace_id, subject_kind,
              subject_id, actor, data)
SELECT min(seq) AS first_seq, max(seq) AS last_seq,
       EXISTS (SELECT 1 FROM events WHERE published_at IS NULL AND publishing_since IS NULL)
FROM inserted \gset
COMMIT;
WITH marked AS (
    UPDATE events SET published_at = clock_timestamp()
    WHERE seq = ANY(ARRAY[:first_seq, :last_seq]::int8[]) AND published_at IS NULL)
SELECT EXISTS (SELECT 1 FROM events WHERE published_at IS NULL AND publishing_since < now() - interval '30 seconds');
