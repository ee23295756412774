"""A lease on a registered model, so that two runs never move its `champion` alias at once.

MLflow's registry has no compare-and-set. The lease is a tag on the registered model,
`promotion.lease = "<owner> <expiry>"`, taken by writing it, waiting `settle_s`, and
reading it back: of two runs that both found it free, the one that wrote last holds it,
and the other reads the winner's tag and waits. That holds as long as one run's read and
write of the tag lie closer together than `settle_s` (one request each; 2 s by default).
A holder that dies leaves the lease until its expiry (`ttl_s`).
"""

import contextlib
import logging
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

from sasrec.errors import SASRecError

log = logging.getLogger(__name__)

LEASE_TAG = "promotion.lease"
TTL_SECONDS = 120.0  # a holder re-checks and moves the alias in a few seconds
SETTLE_SECONDS = 2.0
WAIT_SECONDS = 600.0


def _holder(client: Any, name: str) -> tuple[str, float] | None:
    """(owner, expiry) of the lease on `name`, or None when nobody holds it."""
    value = client.get_registered_model(name).tags.get(LEASE_TAG, "")
    owner, _, expiry = value.partition(" ")
    try:
        return (owner, float(expiry)) if owner else None
    except ValueError:
        return None  # not a lease of ours: take it over


# What a SQL store answers when two runs insert the same tag at the same moment (sqlite,
# PostgreSQL, MySQL): the other run's write won, which the read-back then finds.
CONCURRENT_WRITE = ("IntegrityError", "UNIQUE constraint", "duplicate key", "Duplicate entry")


def _write_lease(client: Any, name: str, value: str) -> None:
    """Write the lease tag; a write that lost a race with another run's is not an error."""
    from mlflow.exceptions import MlflowException

    try:
        client.set_registered_model_tag(name, LEASE_TAG, value)
    except MlflowException as err:
        if not any(sign in str(err) for sign in CONCURRENT_WRITE):
            raise
        log.info("another run wrote the promotion lease of %s at the same moment", name)


@contextlib.contextmanager
def registry_lease(
    client: Any,
    name: str,
    ttl_s: float = TTL_SECONDS,
    settle_s: float = SETTLE_SECONDS,
    wait_s: float = WAIT_SECONDS,
) -> Iterator[str]:
    """Hold the promotion lease on registered model `name` inside the block; yields the owner id.

    Args:
        client: An `MlflowClient` of the registry.
        name: The registered model.
        ttl_s: How long the lease lasts when its holder does not release it.
        settle_s: How long a writer waits before reading the tag back.
        wait_s: How long to wait for a lease that another run holds.

    Raises:
        SASRecError: when another run held the lease for longer than `wait_s`.
    """
    owner = uuid.uuid4().hex
    deadline = time.monotonic() + wait_s
    announced = False
    while True:
        holder = _holder(client, name)
        if holder is None or holder[1] < time.time():
            _write_lease(client, name, f"{owner} {time.time() + ttl_s:.3f}")
            time.sleep(settle_s)
            holder = _holder(client, name)
            if holder is not None and holder[0] == owner:
                break
        if time.monotonic() > deadline:
            raise SASRecError(
                f"another run held the promotion lease of {name} for over {wait_s:.0f} s (tag "
                f"{LEASE_TAG} of the registered model); rerun, or delete the tag if no run is "
                "promoting"
            )
        if not announced:
            log.info("waiting for the promotion lease of %s (another run is promoting)", name)
            announced = True
        time.sleep(random.uniform(0.5, 1.5))
    try:
        yield owner
    finally:
        holder = _holder(client, name)
        if holder is not None and holder[0] == owner:
            client.delete_registered_model_tag(name, LEASE_TAG)
