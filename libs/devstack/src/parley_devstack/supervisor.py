"""Restart what dies: the supervision loop of `parley run`.

A child that exits while the platform runs is started again (same command, port, data and log
file, which it appends to), after a delay that doubles from `initial_delay_s` up to `max_delay_s`
while it keeps dying and starts over once it has stayed up `stable_after_s`. A child that exits
`crash_loop_exits` times within `crash_loop_window_s` is in a crash loop: it is left down with a
message naming it and the tail of its log, and the rest keeps running (the edge's /readyz names
what is missing). Every restart is counted per process; `parley run` publishes the counts in
`.parley/run.json`, which edge-meta serves as `parley_devstack_restarts_total{process}`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from parley_devstack.servers import ManagedProcess, ServerError

Clock = Callable[[], float]
Notify = Callable[[str, "Event"], None]


@dataclass(frozen=True)
class RestartPolicy:
    initial_delay_s: float = 0.5
    max_delay_s: float = 30.0
    stable_after_s: float = 60.0
    crash_loop_exits: int = 5
    crash_loop_window_s: float = 120.0

    def delay(self, consecutive: int) -> float:
        """Wait before the `consecutive`-th restart in a row (1, 2, ...)."""
        return float(min(self.initial_delay_s * 2 ** (consecutive - 1), self.max_delay_s))


@dataclass(frozen=True)
class Event:
    kind: str  # "exited" (a restart is scheduled), "restarted", "gave_up"
    process: str
    code: int | None  # exit code (negative: killed by that signal)
    restarts: int  # restarts of this process so far
    delay_s: float = 0.0  # for "exited": the wait before the restart
    detail: str | None = None  # why it could not be started again, if that failed


@dataclass
class _Watch:
    proc: ManagedProcess
    started_at: float
    consecutive: int = 0
    exits: list[float] = field(default_factory=list)
    restart_at: float | None = None
    last_code: int | None = None
    spawn_error: str | None = None


class Supervisor:
    """Watches processes started elsewhere; `tick()` (called every fraction of a second) restarts
    the ones that died once their backoff has passed."""

    def __init__(self, notify: Notify, policy: RestartPolicy | None = None, clock: Clock = time.monotonic):
        self.policy = policy or RestartPolicy()
        self.notify = notify
        self.clock = clock
        self._watches: dict[str, _Watch] = {}
        self.restarts: dict[str, int] = {}
        self.given_up: dict[str, int | None] = {}

    def watch(self, procs: Iterable[ManagedProcess]) -> None:
        now = self.clock()
        for proc in procs:
            self._watches.setdefault(proc.name, _Watch(proc, started_at=now))
            self.restarts.setdefault(proc.name, 0)

    def tick(self) -> bool:
        """One pass; True if a process was restarted (its pid changed)."""
        now = self.clock()
        changed = False
        for name, watch in self._watches.items():
            if name in self.given_up or watch.proc.alive():
                continue
            if watch.restart_at is None:
                self._exited(watch, now)
            elif now >= watch.restart_at:
                changed |= self._restart(watch, now)
        return changed

    def _exited(self, watch: _Watch, now: float) -> None:
        policy, name = self.policy, watch.proc.name
        watch.last_code = watch.proc.returncode
        if now - watch.started_at >= policy.stable_after_s:
            watch.consecutive = 0  # it ran fine for a while: this is a new failure, not a loop
        watch.exits = [t for t in watch.exits if now - t < policy.crash_loop_window_s] + [now]
        if len(watch.exits) >= policy.crash_loop_exits:
            self.given_up[name] = watch.last_code
            watch.proc.close_log()
            event = Event("gave_up", name, watch.last_code, self.restarts[name], detail=watch.spawn_error)
            self.notify(name, event)
            return
        watch.consecutive += 1
        delay = policy.delay(watch.consecutive)
        watch.restart_at = now + delay
        event = Event("exited", name, watch.last_code, self.restarts[name], delay, watch.spawn_error)
        self.notify(name, event)

    def _restart(self, watch: _Watch, now: float) -> bool:
        name = watch.proc.name
        watch.restart_at = None
        watch.started_at = now
        try:
            watch.proc.restart()
        except (OSError, ServerError) as exc:
            # Could not even spawn it: the next tick counts this as one more exit.
            watch.spawn_error = f"{type(exc).__name__}: {exc}"
            return False
        watch.spawn_error = None
        self.restarts[name] += 1
        self.notify(name, Event("restarted", name, watch.last_code, self.restarts[name]))
        return True
