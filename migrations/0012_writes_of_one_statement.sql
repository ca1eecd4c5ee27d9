-- 0012_writes_of_one_statement.sql — a write can be one statement, without BEGIN and COMMIT.
--
-- A write that reads its row without locking it decides in Rust, then writes the change, its audit rows, its
-- events and its idempotency record in one statement, conditional on the row's version being the one it read.
-- Outside a transaction nothing can be rolled back once the statement has run, so the statement checks its own
-- outcome last and fails as a whole, undoing every part of it, when it must not stand: another request recorded
-- the key first (the caller replays that answer), or a change found its row changed since it was read (the
-- caller reads again). Inside a transaction the same failure aborts it, and the caller rolls it back.
CREATE FUNCTION settle_check(p_recorded boolean, p_changed boolean) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    -- The key first: when another request recorded it, its change is why the row moved, and its answer is ours.
    IF NOT p_recorded THEN
        RAISE SQLSTATE 'OR002' USING MESSAGE = 'the idempotency key is recorded by another request';
    END IF;
    IF NOT p_changed THEN
        RAISE SQLSTATE 'OR001' USING MESSAGE = 'a row changed since it was read';
    END IF;
    RETURN true;
END
$$;
