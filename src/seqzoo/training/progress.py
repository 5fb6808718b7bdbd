"""Progress of a long loop: a tqdm bar on a terminal, a periodic plain log line everywhere else.

Off a terminal (pipes, ``nohup``, CI, Ray workers) a tqdm bar would write ``\\r`` frames into the log, and no bar
at all leaves the log silent until the run ends. So, as tqdm and logging suggest, ``Progress`` draws a bar only
when stderr is a terminal (and ``CI`` is not set); otherwise it logs one INFO line on the ``seqzoo.training``
logger every ``interval`` seconds: ``<desc>: step 120/1000 (12%), loss=0.123, tok_s=4.5e+03, ETA 1m30s``. The
``seqzoo`` command line shows these lines on stderr; a Python caller sees them once logging is configured
(``logging.basicConfig(level=logging.INFO)``). ``enabled=False`` shows nothing at all.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

log = logging.getLogger("seqzoo.training")

DEFAULT_INTERVAL = 30.0  # seconds between plain log lines
INTERVAL_ENV = "SEQZOO_PROGRESS_INTERVAL"  # overrides DEFAULT_INTERVAL (seconds)


def on_terminal() -> bool:
    """True when stderr is an interactive terminal and we are not in CI (the only case a bar is drawn)."""
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """``update`` / ``set_postfix`` / ``close`` like a tqdm bar, drawn as a bar or as periodic log lines.

    ``terminal`` forces the choice (None: decide by :func:`on_terminal`); ``interval`` is the number of seconds
    between log lines off a terminal (None: ``$SEQZOO_PROGRESS_INTERVAL`` or 30).
    """

    def __init__(self, total: int, *, initial: int = 0, desc: str = "", unit: str = "step", enabled: bool = True,
                 terminal: bool | None = None, interval: float | None = None) -> None:
        self.total, self.n, self.desc, self.unit = int(total), int(initial), desc, unit
        self.postfix: dict[str, Any] = {}
        self._bar = None
        self._logging = False
        if not enabled:
            return
        if on_terminal() if terminal is None else terminal:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=self.n, desc=desc, unit=unit, dynamic_ncols=True, leave=False)
        else:
            self._logging = True
            self.interval = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL)) if interval is None else interval
            self._start_n = self.n
            self._t0 = self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        """Advance by ``n``; off a terminal, log a line when ``interval`` seconds passed since the last one."""
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._logging:
            now = time.monotonic()
            if now - self._last >= self.interval:
                self._last = now
                log.info("%s", self.line(now))

    def set_postfix(self, **values: Any) -> None:
        """Numbers shown after the count (``loss=..., tok_s=...``), kept until replaced."""
        self.postfix = dict(values)
        if self._bar is not None:
            self._bar.set_postfix(**values)

    def line(self, now: float | None = None) -> str:
        """The plain progress line: count/total, percent, postfix values and the ETA from the mean rate so far."""
        now = time.monotonic() if now is None else now
        parts = [f"{self.unit} {self.n}/{self.total}" + (f" ({100 * self.n / self.total:.0f}%)" if self.total else "")]
        parts += [f"{k}={v}" for k, v in self.postfix.items()]
        done = self.n - getattr(self, "_start_n", self.n)
        elapsed = now - getattr(self, "_t0", now)
        if done > 0 and self.total > self.n:
            parts.append(f"ETA {_duration((self.total - self.n) * elapsed / done)}")
        return (f"{self.desc}: " if self.desc else "") + ", ".join(parts)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._logging = False
