-- edge::write, last in the transaction (store::settle): in one statement, the change's audit rows (worker and job
-- moves as text arrays in :wm_* and :jm_*, '{}' for none), the response recorded under the key (status in :status,
-- a body of :body_bytes bytes) and the events (types, subjects and data in the :event_* variables, none, one, or
-- two separated by '|').
WITH
\include write/settle_parts
\include write/settle_result
