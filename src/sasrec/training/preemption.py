"""Kubernetes stops a pod (preemption, node drain, eviction) with SIGTERM, then SIGKILL.

Between the two lies the pod's grace period (`terminationGracePeriodSeconds`, 30 s by
default). Training turns SIGTERM into a request to stop after the current batch: it saves
its exact place and exits with `PREEMPTED_EXIT_CODE`, and the retried pod continues
from that batch.
"""

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType

log = logging.getLogger(__name__)

PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM  # what a shell reports for a SIGTERM death: 143


class Preempted(SystemExit):
    """Training stopped on SIGTERM after saving its place: exits the process with 143.

    A SystemExit, not an Exception: no handler of errors (a sweep's record of a failed
    trial, say) takes it for a failure of the training itself.
    """

    def __init__(self, where: str) -> None:
        super().__init__(PREEMPTED_EXIT_CODE)
        self.where = where

    def __str__(self) -> str:
        return f"stopped by SIGTERM; {self.where}"


class StopRequests:
    """While entered, SIGTERM sets `requested` instead of ending the process.

    Only the main thread may handle signals: entered in another thread, it does nothing
    and SIGTERM keeps its usual effect.
    """

    def __init__(self) -> None:
        self.requested = False
        self.on_request: Callable[[], None] | None = None  # e.g. pass it on to a child
        self._previous: signal.Handlers | None = None
        self._installed = False

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._request)
            self._installed = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)

    def _request(self, signum: int, frame: FrameType | None) -> None:
        del signum, frame
        if not self.requested:
            log.warning("SIGTERM: saving the training state after this batch, then exiting")
        self.requested = True
        if self.on_request is not None:
            self.on_request()
