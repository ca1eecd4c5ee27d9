-- 0002_integrity.sql — triggers that enforce what a CHECK or a foreign key cannot express.
--
-- The application still validates everything itself (it must answer 409/422 with the contract's error bodies);
-- these triggers are the last line of defence, so a bug can fail a request but never leave an illegal state.
-- Violations raise SQLSTATE 23514 (check_violation) with the trigger's name as the constraint name, except the
-- commit-time ledger checks, which also use 23514 but fire at COMMIT.
--
-- What the database maintains by itself (never write these):
--   * worker_counts             — from every INSERT/UPDATE/DELETE of workers.
--   * events.seq                — assigned at INSERT, in commit order.
-- What the application writes and the database verifies at COMMIT:
--   * quotas.allocated          = SUM(workers) of open allocations at that depth.
--   * jobs.allocated_workers    = SUM(workers) of the job's open allocations.
--   * idempotency_records.status IS NOT NULL (a committed record always has a response).

-- ---------------------------------------------------------------------------------------------------------------
-- State machines (contract §4)
-- ---------------------------------------------------------------------------------------------------------------
CREATE FUNCTION worker_transition_allowed(from_state text, to_state text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN (from_state = 'IDLE'    AND to_state IN ('RUNNING', 'TERMINATED'))
        OR (from_state = 'RUNNING' AND to_state IN ('PAUSED', 'COMPLETED', 'FAILED', 'TERMINATED'))
        OR (from_state = 'PAUSED'  AND to_state IN ('RUNNING', 'TERMINATED'));

CREATE FUNCTION job_transition_allowed(from_state text, to_state text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN (from_state = 'SUBMITTED' AND to_state IN ('PENDING', 'CANCELED'))
        OR (from_state = 'PENDING'   AND to_state IN ('RUNNING', 'CANCELED'))
        OR (from_state = 'RUNNING'   AND to_state IN ('COMPLETED', 'FAILED', 'CANCELED'));

-- Workers: registered IDLE; status changes only along the state machine; version never goes back; identity and
-- creation time are immutable.
CREATE FUNCTION workers_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status <> 'IDLE' THEN
            RAISE EXCEPTION 'worker % must be registered IDLE, not %', NEW.id, NEW.status
                USING ERRCODE = 'check_violation', CONSTRAINT = 'workers_guard';
        END IF;
        RETURN NEW;
    END IF;

    IF NEW.id <> OLD.id OR NEW.workspace_id <> OLD.workspace_id OR NEW.created_at <> OLD.created_at THEN
        RAISE EXCEPTION 'worker %: id, workspace_id and created_at are immutable', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'workers_guard';
    END IF;
    IF NEW.status <> OLD.status AND NOT worker_transition_allowed(OLD.status, NEW.status) THEN
        RAISE EXCEPTION 'Worker % cannot go from % to %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'workers_guard';
    END IF;
    IF NEW.version < OLD.version THEN
        RAISE EXCEPTION 'worker %: version cannot decrease (% -> %)', OLD.id, OLD.version, NEW.version
            USING ERRCODE = 'check_violation', CONSTRAINT = 'workers_guard';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER workers_guard BEFORE INSERT OR UPDATE ON workers
    FOR EACH ROW EXECUTE FUNCTION workers_guard();

-- Jobs: created SUBMITTED or PENDING holding nothing; a parent must not be terminal; status changes only along the
-- state machine; version never goes back; the submitted fields are immutable.
--
-- The parent's row is locked FOR SHARE here, which waits for (and then sees the result of) a concurrent cancel of
-- the parent, and makes a concurrent cancel wait until the child is committed — so a cancel that cascades to "all
-- non-terminal descendants" cannot miss a child being submitted at the same moment. Parent depth and workspace are
-- enforced declaratively by jobs_parent_fk (0001).
CREATE FUNCTION jobs_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    parent_status text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status NOT IN ('SUBMITTED', 'PENDING') THEN
            RAISE EXCEPTION 'job % must be created SUBMITTED or PENDING, not %', NEW.id, NEW.status
                USING ERRCODE = 'check_violation', CONSTRAINT = 'jobs_guard';
        END IF;
        IF NEW.allocated_workers <> 0 THEN
            RAISE EXCEPTION 'job % must be created holding no workers', NEW.id
                USING ERRCODE = 'check_violation', CONSTRAINT = 'jobs_guard';
        END IF;
        IF NEW.parent_job_id IS NOT NULL THEN
            SELECT status INTO parent_status FROM jobs WHERE id = NEW.parent_job_id FOR SHARE;
            -- A missing parent is reported by jobs_parent_fk.
            IF parent_status IN ('COMPLETED', 'FAILED', 'CANCELED') THEN
                RAISE EXCEPTION 'parent job % is %', NEW.parent_job_id, parent_status
                    USING ERRCODE = 'check_violation', CONSTRAINT = 'jobs_guard';
            END IF;
        END IF;
        RETURN NEW;
    END IF;

    IF NEW.id <> OLD.id OR NEW.workspace_id <> OLD.workspace_id OR NEW.depth <> OLD.depth
       OR NEW.parent_job_id IS DISTINCT FROM OLD.parent_job_id OR NEW.task_description <> OLD.task_description
       OR NEW.worker_count <> OLD.worker_count OR NEW.created_at <> OLD.created_at THEN
        RAISE EXCEPTION 'job %: only status, allocation, timestamps, version, result and error may change', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'jobs_guard';
    END IF;
    IF NEW.status <> OLD.status AND NOT job_transition_allowed(OLD.status, NEW.status) THEN
        RAISE EXCEPTION 'Job % cannot go from % to %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'jobs_guard';
    END IF;
    IF NEW.version < OLD.version THEN
        RAISE EXCEPTION 'job %: version cannot decrease (% -> %)', OLD.id, OLD.version, NEW.version
            USING ERRCODE = 'check_violation', CONSTRAINT = 'jobs_guard';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER jobs_guard BEFORE INSERT OR UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION jobs_guard();

-- Audit rows are append-only (DELETE stays possible for test clean-up).
CREATE FUNCTION append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are append-only', TG_TABLE_NAME
        USING ERRCODE = 'check_violation', CONSTRAINT = TG_TABLE_NAME || '_append_only';
END
$$;

CREATE TRIGGER worker_transitions_append_only BEFORE UPDATE ON worker_transitions
    FOR EACH ROW EXECUTE FUNCTION append_only();
CREATE TRIGGER job_transitions_append_only BEFORE UPDATE ON job_transitions
    FOR EACH ROW EXECUTE FUNCTION append_only();

-- ---------------------------------------------------------------------------------------------------------------
-- worker_counts, maintained in the transaction of every change to workers
-- ---------------------------------------------------------------------------------------------------------------
-- When one UPDATE moves a worker between two counters, both rows are touched in (workspace_id, status) order, so
-- two concurrent opposite moves (RUNNING->PAUSED and PAUSED->RUNNING in one workspace) cannot deadlock.
CREATE FUNCTION worker_counts_bump(p_workspace_id text, p_status text, p_delta integer) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    IF p_delta > 0 THEN
        INSERT INTO worker_counts AS c (workspace_id, status, count) VALUES (p_workspace_id, p_status, p_delta)
        ON CONFLICT (workspace_id, status) DO UPDATE SET count = c.count + EXCLUDED.count;
    ELSE
        UPDATE worker_counts SET count = count + p_delta
         WHERE workspace_id = p_workspace_id AND status = p_status;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'worker_counts has no row for (%, %)', p_workspace_id, p_status
                USING ERRCODE = 'check_violation', CONSTRAINT = 'worker_counts_maintain';
        END IF;
    END IF;
END
$$;

CREATE FUNCTION worker_counts_maintain() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM worker_counts_bump(NEW.workspace_id, NEW.status, 1);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM worker_counts_bump(OLD.workspace_id, OLD.status, -1);
    ELSIF (NEW.workspace_id, NEW.status) IS DISTINCT FROM (OLD.workspace_id, OLD.status) THEN
        IF (OLD.workspace_id, OLD.status) < (NEW.workspace_id, NEW.status) THEN
            PERFORM worker_counts_bump(OLD.workspace_id, OLD.status, -1);
            PERFORM worker_counts_bump(NEW.workspace_id, NEW.status, 1);
        ELSE
            PERFORM worker_counts_bump(NEW.workspace_id, NEW.status, 1);
            PERFORM worker_counts_bump(OLD.workspace_id, OLD.status, -1);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER worker_counts_maintain AFTER INSERT OR DELETE OR UPDATE OF workspace_id, status ON workers
    FOR EACH ROW EXECUTE FUNCTION worker_counts_maintain();

-- ---------------------------------------------------------------------------------------------------------------
-- Allocation ledger
-- ---------------------------------------------------------------------------------------------------------------
-- An allocation row is immutable except for being released once.
CREATE FUNCTION allocations_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id <> OLD.id OR NEW.job_id <> OLD.job_id OR NEW.workspace_id <> OLD.workspace_id
       OR NEW.depth <> OLD.depth OR NEW.workers <> OLD.workers OR NEW.created_at <> OLD.created_at
       OR (OLD.released_at IS NOT NULL AND NEW.released_at IS DISTINCT FROM OLD.released_at) THEN
        RAISE EXCEPTION 'allocation %: the only permitted change is setting released_at once', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'allocations_guard';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER allocations_guard BEFORE UPDATE ON allocations
    FOR EACH ROW EXECUTE FUNCTION allocations_guard();

-- Commit-time checks that the counters agree with the ledger. They read committed data plus the transaction's own
-- writes; because every writer of a depth's ledger holds that depth's quotas row lock until commit, the check is
-- exact for callers that follow the protocol (see 0001, quotas/allocations) and fails loudly for those that don't.
CREATE FUNCTION ledger_check_depth(p_depth smallint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    counted integer;
    held    bigint;
BEGIN
    SELECT allocated INTO counted FROM quotas WHERE depth = p_depth;
    SELECT COALESCE(SUM(workers), 0) INTO held FROM allocations WHERE depth = p_depth AND released_at IS NULL;
    IF counted IS DISTINCT FROM held THEN
        RAISE EXCEPTION 'quotas.allocated at depth % is % but open allocations hold %', p_depth, counted, held
            USING ERRCODE = 'check_violation', CONSTRAINT = 'allocation_ledger';
    END IF;
END
$$;

CREATE FUNCTION ledger_check_job(p_job_id text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    counted integer;
    held    bigint;
BEGIN
    SELECT allocated_workers INTO counted FROM jobs WHERE id = p_job_id;
    IF NOT FOUND THEN
        RETURN;  -- deleted in this transaction; its allocations' foreign key already made sure none are left
    END IF;
    SELECT COALESCE(SUM(workers), 0) INTO held FROM allocations WHERE job_id = p_job_id AND released_at IS NULL;
    IF counted IS DISTINCT FROM held THEN
        RAISE EXCEPTION 'jobs.allocated_workers of % is % but its open allocations hold %', p_job_id, counted, held
            USING ERRCODE = 'check_violation', CONSTRAINT = 'allocation_ledger';
    END IF;
END
$$;

CREATE FUNCTION allocation_ledger_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'allocations' THEN
        IF TG_OP <> 'DELETE' THEN
            PERFORM ledger_check_depth(NEW.depth);
            PERFORM ledger_check_job(NEW.job_id);
        ELSE
            PERFORM ledger_check_depth(OLD.depth);
            PERFORM ledger_check_job(OLD.job_id);
        END IF;
    ELSIF TG_TABLE_NAME = 'quotas' THEN
        PERFORM ledger_check_depth(NEW.depth);
    ELSIF TG_TABLE_NAME = 'jobs' THEN
        PERFORM ledger_check_job(NEW.id);
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER allocation_ledger_allocations AFTER INSERT OR UPDATE OR DELETE ON allocations
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION allocation_ledger_check();
CREATE CONSTRAINT TRIGGER allocation_ledger_quotas AFTER INSERT OR UPDATE OF allocated ON quotas
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION allocation_ledger_check();
CREATE CONSTRAINT TRIGGER allocation_ledger_jobs AFTER UPDATE OF allocated_workers ON jobs
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION allocation_ledger_check();

-- ---------------------------------------------------------------------------------------------------------------
-- Idempotency: a committed record always carries its response
-- ---------------------------------------------------------------------------------------------------------------
CREATE FUNCTION idempotency_record_complete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM idempotency_records WHERE scope_key = NEW.scope_key AND status IS NULL) THEN
        RAISE EXCEPTION 'idempotency record % would be committed without a response', NEW.scope_key
            USING ERRCODE = 'check_violation', CONSTRAINT = 'idempotency_record_complete';
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER idempotency_record_complete AFTER INSERT OR UPDATE ON idempotency_records
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION idempotency_record_complete();

-- ---------------------------------------------------------------------------------------------------------------
-- Events: seq in commit order; rows immutable except for being marked published (drain with
--   UPDATE events SET published_at = now() WHERE seq = ANY($1) AND published_at IS NULL)
-- ---------------------------------------------------------------------------------------------------------------
-- The advisory lock is transaction-scoped: it is taken at a transaction's first event INSERT and released after
-- its commit has become visible, so a later seq is never visible before an earlier one. Writers therefore insert
-- events after taking every row lock they need (otherwise two writers could deadlock on lock + row).
CREATE FUNCTION events_assign_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('orchestrator:events.seq', 0));
    NEW.seq := nextval('events_seq_seq');
    RETURN NEW;
END
$$;

CREATE TRIGGER events_assign_seq BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_assign_seq();

CREATE FUNCTION events_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.seq, NEW.id, NEW.type, NEW.occurred_at, NEW.workspace_id, NEW.subject_kind, NEW.subject_id, NEW.actor,
        NEW.data)
       IS DISTINCT FROM
       (OLD.seq, OLD.id, OLD.type, OLD.occurred_at, OLD.workspace_id, OLD.subject_kind, OLD.subject_id, OLD.actor,
        OLD.data)
    THEN
        RAISE EXCEPTION 'event %: the only permitted change is setting published_at', OLD.seq
            USING ERRCODE = 'check_violation', CONSTRAINT = 'events_guard';
    END IF;
    -- Two publishers may race to mark the same event (delivery is at-least-once): the first mark wins quietly.
    IF OLD.published_at IS NOT NULL THEN
        NEW.published_at := OLD.published_at;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER events_guard BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION events_guard();
