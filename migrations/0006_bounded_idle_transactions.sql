-- A backstop for transactions nobody will finish. Under Spin, a connection whose request trapped
-- (or whose component forgot to commit) goes back to the pool with its transaction open: Spin's
-- `Clean` recycling ends none. Until a later request of this app draws it and rolls it back, it
-- holds its row locks. Postgres ends such a session once it has sat idle inside a transaction
-- this long, which bounds how long anyone can wait on those locks. The app's own transactions
-- never wait on their client between statements for more than milliseconds.
-- (Per database, for sessions opened from now on.)
DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET idle_in_transaction_session_timeout = %L',
                   current_database(), '5s');
END
$$;
