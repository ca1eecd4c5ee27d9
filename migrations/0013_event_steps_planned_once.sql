-- 0013_event_steps_planned_once.sql — what is left to stamp or publish is looked up by a plan kept per connection.
--
-- events_left (0011) was a SQL function. Called from PL/pgSQL, a SQL function that cannot be inlined is parsed and
-- planned again on every call: Postgres 15 keeps no plan for it beyond the calling expression's run, and every write
-- calls it at least twice, after its commit. Sampled with perf under 64 writers (pause/resume), its parsing and
-- planning took 11 % of Postgres's CPU. As PL/pgSQL, its queries are planned once per connection like every other
-- query in these functions, and each step has a query of its own instead of a CASE on the step's name.
CREATE OR REPLACE FUNCTION events_left(p_own bigint[], p_step text) RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_step = 'stamp' THEN
        RETURN EXISTS (SELECT 1 FROM events WHERE pos = ANY (p_own) AND seq IS NULL);
    END IF;
    RETURN EXISTS (SELECT 1 FROM events WHERE pos = ANY (p_own) AND published_at IS NULL);
END
$$;
