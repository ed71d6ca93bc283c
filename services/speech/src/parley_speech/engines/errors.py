"""Provider failures → the `speech.engine_*` codes. A provider's own message is logged, never
forwarded (it may echo the request)."""

from __future__ import annotations

import structlog

from parley_common.errors import Codes, ParleyError

log = structlog.get_logger(__name__)


def from_status(engine: str, status: int, body: str = "") -> ParleyError:
    log.warning("speech.provider_error", engine=engine, status=status, body=body[:300])
    if status in (401, 403):
        return ParleyError(Codes.SPEECH_ENGINE_AUTH_FAILED, params={"engine": engine})
    if status == 429:
        return ParleyError(Codes.SPEECH_ENGINE_RATE_LIMITED, params={"engine": engine})
    if status >= 500:
        return ParleyError(
            Codes.SPEECH_ENGINE_UNAVAILABLE, params={"engine": engine, "detail": f"HTTP {status}"}
        )
    return ParleyError(Codes.SPEECH_ENGINE_REJECTED, params={"engine": engine, "detail": f"HTTP {status}"})


def timeout(engine: str) -> ParleyError:
    return ParleyError(Codes.SPEECH_ENGINE_TIMEOUT, params={"engine": engine})


def unreachable(engine: str, exc: BaseException) -> ParleyError:
    return ParleyError(
        Codes.SPEECH_ENGINE_UNAVAILABLE, params={"engine": engine, "detail": type(exc).__name__}
    )


def disconnected(engine: str, detail: str) -> ParleyError:
    return ParleyError(Codes.SPEECH_ENGINE_DISCONNECTED, params={"engine": engine, "detail": detail})


def protocol(engine: str, detail: str) -> ParleyError:
    return ParleyError(Codes.SPEECH_ENGINE_PROTOCOL_ERROR, params={"engine": engine, "detail": detail})


def from_close(engine: str, code: int | None, reason: str) -> ParleyError:
    """A WebSocket the provider closed before the stream's end."""
    log.warning("speech.provider_closed", engine=engine, code=code, reason=reason[:200])
    if code == 1008 and any(w in reason.lower() for w in ("auth", "key", "unauthor", "credential")):
        return ParleyError(Codes.SPEECH_ENGINE_AUTH_FAILED, params={"engine": engine})
    if code == 1008 and "quota" in reason.lower():
        return ParleyError(Codes.SPEECH_ENGINE_RATE_LIMITED, params={"engine": engine})
    if code in (1008, 1003, 1007):
        return ParleyError(
            Codes.SPEECH_ENGINE_REJECTED, params={"engine": engine, "detail": f"closed {code}"}
        )
    return disconnected(engine, f"closed {code}" if code else "connection lost")
