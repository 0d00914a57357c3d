"""Beat's scheduler: the schedule and a lock in Redis, so any number of beats run and one sends.

RedBeat (celery-redbeat) keeps every schedule entry and its last run in Redis,
and only the beat holding a lock sends. A second beat waits for the lock and
continues the same schedule when it gets it: nothing runs twice because beats
changed, nothing waits longer than the lock's timeout. The active beat renews
the lock on every tick (at least every ``BEAT_LOCK_TIMEOUT / 5`` seconds); a
standby tries to take it as often, so a beat that died is replaced within
``1.2 x BEAT_LOCK_TIMEOUT`` seconds.

RedBeat itself exits when it finds its lock taken or Redis unreachable. This
scheduler stands by instead: it stops sending, waits for the lock like a newly
started beat, and reinstalls the schedule once it has it (a Redis that restarted
empty has lost the entries too), so a Redis restart needs nobody to restart beat.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

from celery.signals import beat_init
from redbeat.schedulers import RedBeatScheduler, acquire_distributed_beat_lock
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("celery.beat")

# RedBeat takes the lock from Celery's beat_init signal, where a Redis that is not up yet
# ends in a traceback; Scheduler.tick takes it instead, retrying with one line a try.
beat_init.disconnect(acquire_distributed_beat_lock)

#: What a lost or slow Redis raises; beat waits and tries again.
UNREACHABLE = (RedisConnectionError, RedisTimeoutError)


class Scheduler(RedBeatScheduler):
    """RedBeat that goes back to standing by, instead of exiting, when it loses its lock."""

    #: The held lock (a ``redis.lock.Lock``), None while standing by; set by RedBeat.
    lock: Any = None
    #: Whether the schedule must be installed again before this beat sends.
    _reinstall = False

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if self.lock_key and (self.lock is None or self._reinstall) and not self._take_lock():
            return float(self.max_interval)
        try:
            return float(super().tick(*args, **kwargs))
        except LockError as exc:
            # Another beat has the lock (ours expired while this one was paused or
            # cut off from Redis), or Redis lost it: stop sending and queue up again.
            log.warning("beat: lost the lock (%s); standing by", exc)
            self.lock = None
            self._reinstall = True
            return 0.0
        except UNREACHABLE as exc:
            # Nothing was sent: the lock is renewed before anything is. The next
            # tick renews it if it is still ours, or finds it lost and stands by.
            log.warning("beat: Redis unreachable (%s); retrying in %ss", exc, self.max_interval)
            return float(self.max_interval)

    def setup_schedule(self) -> None:
        try:
            super().setup_schedule()
        except UNREACHABLE as exc:
            # Beat started before Redis answers: install the schedule once it does (the
            # first tick takes the lock and installs it) instead of exiting.
            log.warning("beat: Redis unreachable (%s); waiting for it", exc)
            self._reinstall = True

    def _take_lock(self) -> bool:
        """Wait for the lock as a newly started beat does; then (re)install the schedule."""
        try:
            if self.lock is None:
                acquire_distributed_beat_lock(sender=SimpleNamespace(scheduler=self))
                self._reinstall = True
            if self._reinstall:
                self.setup_schedule()
                self._reinstall = False
        except UNREACHABLE as exc:
            log.warning("beat: cannot take the lock (%s); retrying in %ss", exc, self.max_interval)
            return False
        return True

    def close(self) -> None:
        try:
            super().close()
        except UNREACHABLE as exc:
            # The lock expires on its own; the standby takes it then.
            log.warning("beat: could not release the lock (%s)", exc)
