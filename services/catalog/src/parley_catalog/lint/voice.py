"""Lint of an agent's `config.voice`: engines the speech workers have, and a key for each cloud
engine. Pure: the caller gives the agent's secret names and the platform's speech keys.

Codes (docs/voice.md, "Agent config"): `voice.unknown_engine`, `voice.missing_key`.
"""

from __future__ import annotations

from collections.abc import Collection

from parley_catalog.lint.rules import Diagnostic
from parley_common.speech_contract import ENGINES, AgentVoiceConfig, EngineKind, SpeechProviderKeys


def lint_voice(
    voice: AgentVoiceConfig | None, *, secret_names: Collection[str], keys: SpeechProviderKeys
) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    if voice is None:
        return out
    for kind, spec in ((EngineKind.STT, voice.stt), (EngineKind.TTS, voice.tts)):
        if spec is None:
            continue
        where = f"config.voice.{kind.value}"
        info = ENGINES.get(spec.engine)
        if info is None or kind not in info.kinds:
            known = ", ".join(sorted(name for name, e in ENGINES.items() if kind in e.kinds))
            out.append(
                Diagnostic(
                    "voice.unknown_engine",
                    f"{where}.engine: unknown {kind.value.upper()} engine {spec.engine!r} (known: {known})",
                )
            )
            continue
        if not info.needs_key:
            continue
        secret = spec.api_key_secret or info.secret
        if secret not in secret_names and not keys.key_for(info.name):
            out.append(
                Diagnostic(
                    "voice.missing_key",
                    f"{where}: the {info.name} engine needs an API key: add the agent secret {secret!r} "
                    f"or set {info.setting} on the platform",
                )
            )
    return out
