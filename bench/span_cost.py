"""What one of a turn's spans costs its process: opened as the services opened it until change 94
(`start_as_current_span` on a module-level tracer, made before the tracer provider was set, so a
`ProxyTracer`), through `parley_common.telemetry.current_span`, and the SDK's span alone (started
and ended, never made current), in one process with the services' tracer provider (no exporter,
as `parley run`).

    python -m bench.span_cost [--count 20000] [--rounds 5]

See docs/performance.md, "The twenty-eighth round".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from opentelemetry import trace

from bench._options import int_options
from parley_common.settings import CommonSettings
from parley_common.telemetry import current_span, setup_telemetry

ATTRIBUTES = {"node.id": "dialog-1", "node.type": "CONTROL.DIALOG"}  # a `runtime.node` span's


def ways() -> dict[str, Callable[[], None]]:
    module_tracer = trace.get_tracer("bench.span_cost")  # before the provider: a ProxyTracer
    setup_telemetry(CommonSettings())
    tracer = trace.get_tracer("bench.span_cost.sdk")

    def sdk_way() -> None:
        with module_tracer.start_as_current_span("runtime.node", attributes=ATTRIBUTES):
            pass

    def current() -> None:
        with current_span(module_tracer, "runtime.node", attributes=ATTRIBUTES):
            pass

    def span_alone() -> None:
        tracer.start_span("runtime.node", attributes=ATTRIBUTES).end()

    return {"start_as_current_span": sdk_way, "current_span": current, "the span alone": span_alone}


def span_us(way: Callable[[], None], count: int) -> float:
    started = time.process_time()
    for _ in range(count):
        way()
    return (time.process_time() - started) / count * 1e6


def main(argv: Sequence[str] | None = None) -> None:
    args = int_options(__doc__, argv, count=20000, rounds=5)  # spans per round and way
    paths = ways()
    best = dict.fromkeys(paths, float("inf"))
    for _ in range(args.rounds):  # alternated, so each sees the same machine
        for name, way in paths.items():
            best[name] = min(best[name], span_us(way, args.count))
    print("a span opened by          CPU µs/span  ratio")
    for name, us in best.items():
        print(f"{name:<26}{us:>12.1f}{us / best['start_as_current_span']:>7.2f}")


if __name__ == "__main__":
    main()
