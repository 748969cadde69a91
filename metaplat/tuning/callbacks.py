"""Tune callbacks of metaplat's own (driver side)."""

from __future__ import annotations

import logging
import time
from typing import Any

from ray.tune import Callback

log = logging.getLogger(__name__)

#: Logged once per sweep when the first trial result reaches the driver
#: (``benchmarks/cold_start.py`` waits for this line).
FIRST_RESULT_MARKER = "first result"


class FirstResultLogger(Callback):
    """Logs when the sweep's first result arrives, and how long after the Tuner started."""

    def __init__(self) -> None:
        self._start = time.monotonic()
        self._seen = False

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        if not self._seen:
            self._seen = True
            log.info(
                "%s: trial %s after %.1f s of tuning",
                FIRST_RESULT_MARKER,
                trial.trial_id,
                time.monotonic() - self._start,
            )
