-- 0001_schema.sql — tables, constraints, indexes and the quota seed.
--
-- Applied exactly once by scripts/migrate, inside one transaction together with its schema_migrations row.
-- No transaction control (BEGIN/COMMIT) and no psql meta-commands in migration files: any client can run them.
-- Integrity triggers (state machines, counters, ledger checks, event ordering) are in 0002_integrity.sql.
--
-- Conventions
--   * Ids are text matching ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$ (contract §1). Generated ids (w_…, j_…) are made
--     by the application, never by the database.
--   * Timestamps are timestamptz (UTC); the API renders them with millisecond precision.
--   * Lists are ordered by (created_at, id); every list filter has an index that ends in (created_at, id), so
--     ORDER BY created_at, id LIMIT … OFFSET … (or a keyset WHERE (created_at, id) > (…)) reads the index in order.
--   * version starts at 1 and the application sets version = version + 1 on every change of the object.

-- ---------------------------------------------------------------------------------------------------------------
-- Workers
-- ---------------------------------------------------------------------------------------------------------------
CREATE TABLE workers (
    id                text        NOT NULL PRIMARY KEY
                                  CONSTRAINT workers_id_shape CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    workspace_id      text        NOT NULL
                                  CONSTRAINT workers_workspace_id_shape
                                  CHECK (workspace_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    status            text        NOT NULL DEFAULT 'IDLE'
                                  CONSTRAINT workers_status_valid
                                  CHECK (status IN ('IDLE', 'RUNNING', 'PAUSED', 'COMPLETED', 'FAILED', 'TERMINATED')),
    -- A JSON object; the 16 KiB limit of the contract is checked by the application on the request body.
    metadata          jsonb       NOT NULL DEFAULT '{}'::jsonb
                                  CONSTRAINT workers_metadata_object CHECK (jsonb_typeof(metadata) = 'object'),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    version           bigint      NOT NULL DEFAULT 1 CONSTRAINT workers_version_positive CHECK (version >= 1),
    last_heartbeat_at timestamptz NULL,
    CONSTRAINT workers_updated_after_created CHECK (updated_at >= created_at)
);

CREATE INDEX workers_list_idx              ON workers (created_at, id);
CREATE INDEX workers_workspace_list_idx    ON workers (workspace_id, created_at, id);
CREATE INDEX workers_status_list_idx       ON workers (status, created_at, id);
CREATE INDEX workers_workspace_status_idx  ON workers (workspace_id, status, created_at, id);

-- Audit trail: one row per state change, written in the transaction of the change (contract §4).
-- from_state is NULL only for the registration row (NULL -> IDLE), if the application writes one.
-- The CHECK lists exactly the edges of the worker state machine, so an illegal transition cannot be recorded.
CREATE TABLE worker_transitions (
    id         bigserial   NOT NULL PRIMARY KEY,
    worker_id  text        NOT NULL REFERENCES workers (id),
    from_state text        NULL
                           CONSTRAINT worker_transitions_from_valid
                           CHECK (from_state IN ('IDLE', 'RUNNING', 'PAUSED', 'COMPLETED', 'FAILED', 'TERMINATED')),
    to_state   text        NOT NULL
                           CONSTRAINT worker_transitions_to_valid
                           CHECK (to_state IN ('IDLE', 'RUNNING', 'PAUSED', 'COMPLETED', 'FAILED', 'TERMINATED')),
    reason     text        NULL CONSTRAINT worker_transitions_reason_length CHECK (char_length(reason) <= 1000),
    actor      text        NOT NULL CONSTRAINT worker_transitions_actor_nonempty CHECK (actor <> ''),
    at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT worker_transitions_edge_allowed CHECK (
        (from_state IS NULL AND to_state = 'IDLE')
        OR (from_state = 'IDLE'    AND to_state IN ('RUNNING', 'TERMINATED'))
        OR (from_state = 'RUNNING' AND to_state IN ('PAUSED', 'COMPLETED', 'FAILED', 'TERMINATED'))
        OR (from_state = 'PAUSED'  AND to_state IN ('RUNNING', 'TERMINATED'))
    )
);

CREATE INDEX worker_transitions_worker_idx ON worker_transitions (worker_id, at, id);

-- Per (workspace, status) counters so that GET /api/supervisor/metrics never scans workers.
-- MAINTAINED BY TRIGGER (0002_integrity.sql) on every INSERT/UPDATE/DELETE of workers, in the same transaction.
-- Applications only read it:
--   SELECT status, sum(count) FROM worker_counts [WHERE workspace_id = $1] GROUP BY status
-- and fill in zeros for missing states. Rows whose count drops to 0 are kept.
CREATE TABLE worker_counts (
    workspace_id text   NOT NULL,
    status       text   NOT NULL
                        CONSTRAINT worker_counts_status_valid
                        CHECK (status IN ('IDLE', 'RUNNING', 'PAUSED', 'COMPLETED', 'FAILED', 'TERMINATED')),
    count        bigint NOT NULL DEFAULT 0 CONSTRAINT worker_counts_count_nonnegative CHECK (count >= 0),
    PRIMARY KEY (workspace_id, status)
);

-- ---------------------------------------------------------------------------------------------------------------
-- Quotas: one global pool per depth (contract §2, §6 Resources)
-- ---------------------------------------------------------------------------------------------------------------
-- The row of a depth is THE lock that serialises allocations at that depth ("never over-grant", on any number of
-- instances): allocate and release take SELECT … FROM quotas WHERE depth = $1 FOR UPDATE, decide, then write the
-- allocation ledger and quotas.allocated in the same transaction. The CHECK makes an over-grant impossible even
-- for a buggy caller; a deferred trigger (0002) checks allocated = the sum of the open allocations at commit.
CREATE TABLE quotas (
    depth       smallint NOT NULL PRIMARY KEY CONSTRAINT quotas_depth_range CHECK (depth BETWEEN 0 AND 5),
    max_workers integer  NOT NULL CONSTRAINT quotas_max_workers_nonnegative CHECK (max_workers >= 0),
    allocated   integer  NOT NULL DEFAULT 0,
    CONSTRAINT quotas_allocated_within_max CHECK (allocated >= 0 AND allocated <= max_workers)
);

-- Contract defaults (variable depth_quotas = "10,8,5,3,2,1"). An application applying a different depth_quotas
-- should UPDATE quotas SET max_workers = GREATEST($max, allocated) so a lowered quota never fails the CHECK;
-- it then takes full effect once enough is released.
INSERT INTO quotas (depth, max_workers) VALUES (0, 10), (1, 8), (2, 5), (3, 3), (4, 2), (5, 1)
ON CONFLICT (depth) DO NOTHING;

-- ---------------------------------------------------------------------------------------------------------------
-- Jobs
-- ---------------------------------------------------------------------------------------------------------------
CREATE TABLE jobs (
    id                text        NOT NULL PRIMARY KEY
                                  CONSTRAINT jobs_id_shape CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    workspace_id      text        NOT NULL
                                  CONSTRAINT jobs_workspace_id_shape
                                  CHECK (workspace_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    status            text        NOT NULL DEFAULT 'SUBMITTED'
                                  CONSTRAINT jobs_status_valid
                                  CHECK (status IN ('SUBMITTED', 'PENDING', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELED')),
    task_description  text        NOT NULL
                                  CONSTRAINT jobs_task_description_length
                                  CHECK (char_length(task_description) BETWEEN 1 AND 4096),
    worker_count      integer     NOT NULL CONSTRAINT jobs_worker_count_range CHECK (worker_count BETWEEN 1 AND 10),
    depth             smallint    NOT NULL DEFAULT 0 CONSTRAINT jobs_depth_range CHECK (depth BETWEEN 0 AND 5),
    parent_job_id     text        NULL,
    -- Derived, never written: the depth the parent must have. With the foreign key below it makes
    -- "parent exists, in the same workspace, at depth - 1" a declarative constraint (no trigger needed).
    -- A depth-0 job with a parent gets parent_depth = -1, which no job has, so it is rejected too.
    parent_depth      smallint    GENERATED ALWAYS AS (depth - 1) STORED,
    -- Workers currently held by the job (sum of its open allocations; checked at commit by 0002).
    allocated_workers integer     NOT NULL DEFAULT 0
                                  CONSTRAINT jobs_allocated_workers_nonnegative CHECK (allocated_workers >= 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz NULL,
    completed_at      timestamptz NULL,
    version           bigint      NOT NULL DEFAULT 1 CONSTRAINT jobs_version_positive CHECK (version >= 1),
    result            jsonb       NULL CONSTRAINT jobs_result_object CHECK (jsonb_typeof(result) = 'object'),
    error             text        NULL CONSTRAINT jobs_error_length CHECK (char_length(error) <= 4096),

    -- Target of the parent foreign key and of allocations' (job_id, workspace_id, depth) foreign key.
    CONSTRAINT jobs_id_workspace_depth_key UNIQUE (id, workspace_id, depth),
    CONSTRAINT jobs_parent_fk FOREIGN KEY (parent_job_id, workspace_id, parent_depth)
        REFERENCES jobs (id, workspace_id, depth),
    CONSTRAINT jobs_not_own_parent CHECK (parent_job_id IS NULL OR parent_job_id <> id),

    CONSTRAINT jobs_updated_after_created CHECK (updated_at >= created_at),
    -- Terminal <=> completed_at is set.
    CONSTRAINT jobs_completed_at_iff_terminal CHECK (
        (status IN ('COMPLETED', 'FAILED', 'CANCELED')) = (completed_at IS NOT NULL)
    ),
    -- started_at is set on the way to RUNNING; COMPLETED/FAILED are reachable only from RUNNING; CANCELED may be
    -- reached from SUBMITTED/PENDING (no started_at) or from RUNNING (started_at kept).
    CONSTRAINT jobs_started_at_consistent CHECK (
        CASE status
            WHEN 'SUBMITTED' THEN started_at IS NULL
            WHEN 'PENDING'   THEN started_at IS NULL
            WHEN 'CANCELED'  THEN true
            ELSE started_at IS NOT NULL
        END
    ),
    CONSTRAINT jobs_times_ordered CHECK (
        (started_at IS NULL OR started_at >= created_at)
        AND (completed_at IS NULL OR completed_at >= COALESCE(started_at, created_at))
    ),
    -- A job reaching a terminal state releases everything it holds in the same transaction (contract §6), so a
    -- terminal job holds nothing. Release first (or in the same UPDATE set allocated_workers = 0).
    CONSTRAINT jobs_terminal_holds_nothing CHECK (
        status NOT IN ('COMPLETED', 'FAILED', 'CANCELED') OR allocated_workers = 0
    ),
    -- result only on COMPLETED (optional there); error exactly on FAILED (the fail body requires it).
    CONSTRAINT jobs_result_only_completed CHECK (result IS NULL OR status = 'COMPLETED'),
    CONSTRAINT jobs_error_iff_failed CHECK ((error IS NOT NULL) = (status = 'FAILED'))
);

CREATE INDEX jobs_list_idx             ON jobs (created_at, id);
CREATE INDEX jobs_workspace_list_idx   ON jobs (workspace_id, created_at, id);
CREATE INDEX jobs_workspace_status_idx ON jobs (workspace_id, status, created_at, id);
CREATE INDEX jobs_parent_list_idx      ON jobs (parent_job_id, created_at, id);
CREATE INDEX jobs_status_list_idx      ON jobs (status, created_at, id);
CREATE INDEX jobs_depth_list_idx       ON jobs (depth, created_at, id);

-- Audit trail; submit writes NULL -> SUBMITTED then SUBMITTED -> PENDING (contract §6, compat).
CREATE TABLE job_transitions (
    id         bigserial   NOT NULL PRIMARY KEY,
    job_id     text        NOT NULL REFERENCES jobs (id),
    from_state text        NULL
                           CONSTRAINT job_transitions_from_valid
                           CHECK (from_state IN ('SUBMITTED', 'PENDING', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELED')),
    to_state   text        NOT NULL
                           CONSTRAINT job_transitions_to_valid
                           CHECK (to_state IN ('SUBMITTED', 'PENDING', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELED')),
    reason     text        NULL CONSTRAINT job_transitions_reason_length CHECK (char_length(reason) <= 4096),
    actor      text        NOT NULL CONSTRAINT job_transitions_actor_nonempty CHECK (actor <> ''),
    at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT job_transitions_edge_allowed CHECK (
        (from_state IS NULL AND to_state = 'SUBMITTED')
        OR (from_state = 'SUBMITTED' AND to_state IN ('PENDING', 'CANCELED'))
        OR (from_state = 'PENDING'   AND to_state IN ('RUNNING', 'CANCELED'))
        OR (from_state = 'RUNNING'   AND to_state IN ('COMPLETED', 'FAILED', 'CANCELED'))
    )
);

CREATE INDEX job_transitions_job_idx ON job_transitions (job_id, at, id);

-- ---------------------------------------------------------------------------------------------------------------
-- Allocations: an append-only ledger, one row per successful POST /api/resources/allocate
-- ---------------------------------------------------------------------------------------------------------------
-- Chosen over one running-total row per (job_id, depth) because the contract returns an allocation_id per call
-- and emits resources.allocated events with subject kind "allocation": each grant needs its own identity.
--   * "Allocations of one job at one depth add up": the job holds SUM(workers) of its rows with released_at NULL
--     (mirrored in jobs.allocated_workers; the depth's total in quotas.allocated).
--   * "Release frees everything the job holds at that depth": one statement closes all its open rows:
--       UPDATE allocations SET released_at = now()
--        WHERE job_id = $1 AND depth = $2 AND released_at IS NULL RETURNING id, workers;
--     and the caller subtracts the returned sum from quotas.allocated and jobs.allocated_workers.
-- The foreign key to jobs (id, workspace_id, depth) means an allocation is always at the job's own depth and in
-- its workspace. Rows are never deleted; the only permitted update is setting released_at once (0002).
CREATE TABLE allocations (
    id           text        NOT NULL PRIMARY KEY
                             CONSTRAINT allocations_id_shape CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    job_id       text        NOT NULL,
    workspace_id text        NOT NULL,
    depth        smallint    NOT NULL CONSTRAINT allocations_depth_range CHECK (depth BETWEEN 0 AND 5)
                             REFERENCES quotas (depth),
    workers      integer     NOT NULL CONSTRAINT allocations_workers_positive CHECK (workers > 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    released_at  timestamptz NULL,
    CONSTRAINT allocations_job_fk FOREIGN KEY (job_id, workspace_id, depth)
        REFERENCES jobs (id, workspace_id, depth),
    CONSTRAINT allocations_released_after_created CHECK (released_at IS NULL OR released_at >= created_at)
);

-- Open allocations of a job (release, terminal transitions) and of a depth (the commit-time ledger check).
CREATE INDEX allocations_open_job_idx   ON allocations (job_id, depth) INCLUDE (workers) WHERE released_at IS NULL;
CREATE INDEX allocations_open_depth_idx ON allocations (depth) INCLUDE (workers) WHERE released_at IS NULL;
CREATE INDEX allocations_job_idx        ON allocations (job_id, created_at, id);

-- ---------------------------------------------------------------------------------------------------------------
-- Idempotency (contract §3), zero2prod's shape
-- ---------------------------------------------------------------------------------------------------------------
-- scope_key: computed by the application from (token sub, method, path, Idempotency-Key), e.g. lowercase hex
-- SHA-256 of a length-prefixed concatenation. fingerprint: SHA-256 of the request body (lowercase hex).
-- Protocol, all inside the request's transaction, BEFORE any state change:
--   INSERT INTO idempotency_records (scope_key, fingerprint, expires_at) VALUES ($1, $2, now() + $ttl * interval '1 second')
--   ON CONFLICT (scope_key) DO UPDATE
--      SET fingerprint = EXCLUDED.fingerprint, status = NULL, body = NULL, response_headers = NULL,
--          created_at = now(), expires_at = EXCLUDED.expires_at
--    WHERE idempotency_records.expires_at <= now()          -- reclaim an expired record
--   RETURNING scope_key;
--   * a row returned  -> first use: process, then UPDATE … SET status, body[, response_headers] and COMMIT.
--   * no row returned -> a committed, live record exists: ROLLBACK; SELECT it; same fingerprint -> replay status
--     and body byte for byte; different fingerprint -> 422 IDEMPOTENCY_KEY_REUSED.
--   The INSERT blocks while another transaction holds an uncommitted row with the same key; the short Redis lock
--   in front of it is what answers 409 IDEMPOTENCY_KEY_IN_USE instead of waiting.
--   * status >= 500: ROLLBACK (nothing recorded, the client may retry).
--   * 4xx after partial writes: ROLLBACK TO a SAVEPOINT taken right after the INSERT, then record the 4xx.
-- status is NULL only inside the in-flight transaction; a deferred trigger (0002) refuses to commit a record
-- without a response.
CREATE TABLE idempotency_records (
    scope_key        text        NOT NULL PRIMARY KEY
                                 CONSTRAINT idempotency_scope_key_length CHECK (char_length(scope_key) BETWEEN 1 AND 512),
    fingerprint      text        NOT NULL
                                 CONSTRAINT idempotency_fingerprint_length CHECK (char_length(fingerprint) BETWEEN 1 AND 512),
    status           smallint    NULL CONSTRAINT idempotency_status_recordable CHECK (status BETWEEN 200 AND 499),
    body             bytea       NULL,
    -- Optional extra response headers to replay (e.g. {"etag": "\"3\"", "location": "…"}).
    response_headers jsonb       NULL
                                 CONSTRAINT idempotency_headers_object CHECK (jsonb_typeof(response_headers) = 'object'),
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    CONSTRAINT idempotency_body_with_status CHECK ((status IS NULL) = (body IS NULL)),
    CONSTRAINT idempotency_headers_with_status CHECK (response_headers IS NULL OR status IS NOT NULL),
    CONSTRAINT idempotency_expires_after_created CHECK (expires_at > created_at)
);

-- Purging: DELETE FROM idempotency_records WHERE expires_at <= now() (any instance, any time).
CREATE INDEX idempotency_records_expires_idx ON idempotency_records (expires_at);

-- ---------------------------------------------------------------------------------------------------------------
-- Events outbox (contract §5)
-- ---------------------------------------------------------------------------------------------------------------
-- seq is a bigserial-like column whose value is assigned by a BEFORE INSERT trigger (0002) under a
-- transaction-scoped advisory lock, so seq order is commit order: a reader of "seq > n" can never later see a
-- smaller seq appear (a plain bigserial default would hand out numbers in insert order, not commit order).
-- Do not supply seq; INSERT … RETURNING seq gives the final value.
-- Consequence for writers: insert a transaction's events LAST (after every row lock it needs, ideally in one
-- multi-row INSERT), then record the idempotent response and commit.
CREATE SEQUENCE events_seq_seq AS bigint;

CREATE TABLE events (
    seq          bigint      NOT NULL PRIMARY KEY,
    id           uuid        NOT NULL DEFAULT gen_random_uuid() CONSTRAINT events_id_key UNIQUE,
    type         text        NOT NULL
                             CONSTRAINT events_type_valid
                             CHECK (type IN ('worker.registered', 'worker.state.changed', 'job.submitted',
                                             'job.state.changed', 'resources.allocated', 'resources.released')),
    occurred_at  timestamptz NOT NULL DEFAULT now(),
    workspace_id text        NOT NULL
                             CONSTRAINT events_workspace_id_shape
                             CHECK (workspace_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    subject_kind text        NOT NULL CONSTRAINT events_subject_kind_valid
                             CHECK (subject_kind IN ('worker', 'job', 'allocation')),
    subject_id   text        NOT NULL
                             CONSTRAINT events_subject_id_shape
                             CHECK (subject_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    actor        text        NOT NULL CONSTRAINT events_actor_nonempty CHECK (actor <> ''),
    data         jsonb       NOT NULL DEFAULT '{}'::jsonb
                             CONSTRAINT events_data_object CHECK (jsonb_typeof(data) = 'object'),
    published_at timestamptz NULL,
    -- worker.* are about a worker, job.* about a job; resources.* about an allocation (or the job, for a release
    -- that closes several allocations).
    CONSTRAINT events_subject_matches_type CHECK (
        CASE
            WHEN type LIKE 'worker.%'    THEN subject_kind = 'worker'
            WHEN type LIKE 'job.%'       THEN subject_kind = 'job'
            ELSE subject_kind IN ('allocation', 'job')
        END
    ),
    CONSTRAINT events_published_after_occurred CHECK (published_at IS NULL OR published_at >= occurred_at)
);

ALTER SEQUENCE events_seq_seq OWNED BY events.seq;

-- Draining the outbox, oldest first:
--   SELECT … FROM events WHERE published_at IS NULL ORDER BY seq LIMIT n [FOR UPDATE SKIP LOCKED]
CREATE INDEX events_unpublished_idx ON events (seq) WHERE published_at IS NULL;
-- Catch-up for a workspace token: WHERE workspace_id = $1 AND seq > $2 ORDER BY seq LIMIT n (operators use the PK).
CREATE INDEX events_workspace_seq_idx ON events (workspace_id, seq);

-- ---------------------------------------------------------------------------------------------------------------
-- Service accounts for POST /api/auth/token (OAuth2 client credentials, contract §2)
-- ---------------------------------------------------------------------------------------------------------------
CREATE TABLE service_accounts (
    client_id    text        NOT NULL PRIMARY KEY
                             CONSTRAINT service_accounts_client_id_shape
                             CHECK (client_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    -- Argon2id PHC string: $argon2id$v=19$m=…,t=…,p=…$salt$hash
    secret_hash  text        NOT NULL
                             CONSTRAINT service_accounts_secret_hash_argon2id CHECK (secret_hash LIKE '$argon2id$%'),
    -- Allowed scopes; a token request may ask for a subset. One-dimensional, no NULLs, only known scopes.
    scopes       text[]      NOT NULL DEFAULT '{}'
                             CONSTRAINT service_accounts_scopes_known CHECK (
                                 COALESCE(array_ndims(scopes), 1) = 1
                                 AND scopes <@ ARRAY['supervisor:read', 'supervisor:write', 'resources:read',
                                                     'resources:write', 'jobs:read', 'jobs:write']::text[]
                             ),
    -- NULL: the issued tokens are operator tokens (no workspace_id claim).
    workspace_id text        NULL
                             CONSTRAINT service_accounts_workspace_id_shape
                             CHECK (workspace_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    disabled     boolean     NOT NULL DEFAULT false
);
