"""Schemathesis hooks for scripts/schemathesis: where a check cannot know the service's state, say so
here, as narrowly as the case allows, rather than switching the check off."""

import itertools
import os
import re

import schemathesis

KEY_HEADERS = ("Idempotency-Key", "Request-Id")
WELL_FORMED_KEY = re.compile(r"[\x20-\x7e]{1,255}")
_fresh = itertools.count()


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    """Makes every well-formed idempotency key unique to its request.

    Hypothesis draws the same few keys ("0", "dev") for many requests, and the same key with another
    body is rightly 422 IDEMPOTENCY_KEY_REUSED (contract §3): without this, most generated writes
    would test the key store, not the operation. Malformed keys are left as they are, so their
    refusal is still checked; replays are tested by tests/api/tests/idempotency.rs.
    """
    for name in KEY_HEADERS:
        value = (case.headers or {}).get(name)
        if isinstance(value, str) and WELL_FORMED_KEY.fullmatch(value):
            case.headers[name] = f"{value[:200]}.{os.getpid()}.{next(_fresh)}"


def refused_for_state(status, error, body):
    """Whether a refusal of a schema-valid request depends only on what the service holds, which no
    schema can say."""
    if (status, error.get("code")) == (412, "VERSION_MISMATCH"):
        # A well-formed If-Match naming a version the object is not at (contract §4).
        return True
    fields = {f.get("field") for f in (error.get("details") or {}).get("fields") or []}
    if status != 422 or not fields or not isinstance(body, dict):
        return False
    # Submit under a `parent_job_id` that names no job of the workspace, or at a depth other than
    # one below the parent's; allocate at a depth other than the job's: which jobs exist, and at
    # what depth, is state.
    if "parent_job_id" in body:
        return fields <= {"parent_job_id", "depth"}
    return "job_id" in body and fields == {"depth"}

@schemathesis.hook
def filter_failure(ctx, failure, case, response):
    """Keeps every failure but "schema-valid request rejected" (ST202) for a refusal of state."""
    if failure.code != "ST202":
        return True
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return True
    return not refused_for_state(response.status_code, error, case.body)
