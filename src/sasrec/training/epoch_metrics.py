"""Per-epoch metrics sent to MLflow exactly once, by a thread that outlasts server outages."""

import logging
import queue
import threading
import time
from typing import Any

import tenacity

from sasrec.errors import ServiceUnavailable
from sasrec.storage import login, redact
from sasrec.tracking import OUTAGE_SECONDS_ENV, mlflow_key, resolve_tracking_uri

log = logging.getLogger(__name__)


class BufferedMetricsLogger:
    """Per-epoch metrics sent to MLflow, exactly once, by a background thread.

    Training hands over each epoch's record (`TrainingState.history`: epoch, the time it
    was measured, its metrics) and goes on at once; the same records travel with the
    checkpoint. The thread sends each metric not yet in the run, one `log_batch` per
    epoch with the epoch as step and the original timestamp, retrying with backoff while
    the server is away (restarted, behind a proxy answering 502) for up to
    `max_outage_s`. A resumed run (`resumed`) first reads which (metric, step) pairs the
    run already holds, so that a record handed over again is sent only where missing.
    """

    def __init__(
        self, tracking_uri: str | None, run_id: str, max_outage_s: float, resumed: bool = False
    ) -> None:
        from mlflow import MlflowClient

        uri = resolve_tracking_uri(tracking_uri)
        self._client = MlflowClient(uri)
        self._uri = redact(uri)
        self._login = login(uri)  # kept out of messages
        self._run_id = run_id
        self._max_outage_s = max_outage_s
        self._resumed = resumed
        self._on_server: dict[int, set[str]] = {}  # step -> metric keys the run holds
        self._records: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._failing_since: float | None = None  # time.monotonic() of the first failure
        self._thread = threading.Thread(target=self._send_all, name="mlflow-metrics", daemon=True)
        self._thread.start()

    def put(self, record: dict[str, Any]) -> None:
        """Queue one epoch's record: {"epoch": int, "timestamp_ms": int, "metrics": {...}}."""
        self._records.put(record)

    def _retrying(self) -> tenacity.Retrying:
        def outage_too_long(retry_state: tenacity.RetryCallState) -> bool:
            del retry_state
            since = self._failing_since
            return since is not None and time.monotonic() - since >= self._max_outage_s

        def note_failure(retry_state: tenacity.RetryCallState) -> None:
            if self._failing_since is None:
                self._failing_since = time.monotonic()
            log.warning(
                "MLflow did not take the metrics (%s); training goes on, retrying",
                self._without_login(str(retry_state.outcome.exception())),
            )

        return tenacity.Retrying(
            wait=tenacity.wait_exponential(multiplier=0.5, max=15),
            stop=outage_too_long,
            before_sleep=note_failure,
            reraise=True,
        )

    def _read_on_server(self, keys: set[str]) -> None:
        for key in keys:
            for metric in self._client.get_metric_history(self._run_id, key):
                self._on_server.setdefault(metric.step, set()).add(key)

    def _send(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        step, sent = record["epoch"], self._on_server.get(record["epoch"], set())
        batch = [
            Metric(key, float(value), record["timestamp_ms"], step)
            for key, value in ((mlflow_key(k), v) for k, v in record["metrics"].items())
            if key not in sent
        ]
        if batch:
            self._client.log_batch(self._run_id, metrics=batch)
            self._on_server.setdefault(step, set()).update(m.key for m in batch)

    def _send_all(self) -> None:
        retrying = self._retrying()
        while (record := self._records.get()) is not None:
            if self._error is not None:
                continue
            try:
                if self._resumed:
                    keys = {mlflow_key(k) for k in record["metrics"]}
                    retrying(self._read_on_server, keys)
                    self._resumed = False
                retrying(self._send, record)
                self._failing_since = None
            except Exception as err:  # any failure: close() reports it
                self._error = err

    def _without_login(self, text: str) -> str:
        return text.replace(f"{self._login}@", "") if self._login else text

    def close(self) -> None:
        """Wait until every queued record is sent, within the outage allowance.

        The allowance is a deadline: `max_outage_s` after the server stopped answering
        (or after this call, when it answers), whatever MLflow's own retries inside one
        call would take.

        Raises:
            ServiceUnavailable: when MLflow did not take every record in time. The records
                are in the checkpoint: a rerun sends what is missing.
        """
        self._records.put(None)
        start = self._failing_since or time.monotonic()
        self._thread.join(timeout=max(0.0, start + self._max_outage_s - time.monotonic()))
        if self._thread.is_alive() or self._error is not None:
            why = self._without_login(str(self._error)) if self._error else "no answer in time"
            raise ServiceUnavailable(
                f"MLflow at {self._uri} did not take the epoch metrics in "
                f"{self._max_outage_s:.0f} s ({why}); the model and the checkpoint are kept: "
                f"rerun the step to finish the logging, or set ${OUTAGE_SECONDS_ENV} to "
                "wait longer"
            ) from self._error

    def abandon(self, wait_s: float = 5.0) -> None:
        """Stop after what can be sent within `wait_s`: the rest is in the checkpoint."""
        self._records.put(None)
        self._thread.join(timeout=wait_s)
