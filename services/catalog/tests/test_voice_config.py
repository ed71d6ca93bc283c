"""`config.voice`: saved and served in the runtime snapshot; lint reports an unknown engine or a
missing key, blocks going live with one, and keeps a live agent's voice from breaking."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Collection
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from parley_catalog.context import CatalogContext
from parley_catalog.lint.voice import lint_voice
from parley_common import subjects
from parley_common.catalog_contract import AgentResolveReply
from parley_common.speech_contract import AgentVoiceConfig, SpeechProviderKeys

from .support import World, assert_error, valid_blueprint


@pytest.fixture
async def nc(ctx: CatalogContext) -> AsyncIterator[Client]:
    client = await nats.connect(ctx.settings.nats_url)
    yield client
    await client.close()


def codes(voice: dict[str, Any], secrets: Collection[str] = (), **keys: Any) -> list[str]:
    found = lint_voice(
        AgentVoiceConfig.model_validate(voice), secret_names=secrets, keys=SpeechProviderKeys(**keys)
    )
    return [d.code for d in found]


def test_lint_voice_rules() -> None:
    assert codes({}) == []
    assert codes({"stt": {"engine": "whisper"}, "tts": {"engine": "espeak", "voice": "en-gb"}}) == []
    assert codes({"stt": {"engine": "klingon"}}) == ["voice.unknown_engine"]
    assert codes({"tts": {"engine": "whisper"}}) == ["voice.unknown_engine"]  # an STT engine as TTS
    assert codes({"stt": {"engine": "deepgram"}, "tts": {"engine": "elevenlabs"}}) == [
        "voice.missing_key",
        "voice.missing_key",
    ]
    assert codes({"stt": {"engine": "deepgram"}}, {"DEEPGRAM_API_KEY"}) == []
    assert codes({"stt": {"engine": "deepgram"}}, speech_deepgram_api_key="platform-key") == []
    named = {"stt": {"engine": "openai", "api_key_secret": "MY_OPENAI"}}
    assert codes(named, {"OPENAI_API_KEY"}) == ["voice.missing_key"]
    assert codes(named, {"MY_OPENAI"}) == []
    message = lint_voice(
        AgentVoiceConfig.model_validate({"tts": {"engine": "elevenlabs"}}),
        secret_names=set(),
        keys=SpeechProviderKeys(),
    )[0].message
    assert "ELEVENLABS_API_KEY" in message and "PARLEY_SPEECH_ELEVENLABS_API_KEY" in message


async def test_voice_config_is_saved_linted_and_in_the_snapshot(world: World, nc: Client) -> None:
    alice = await world.user()
    voice = {
        "stt": {"engine": "deepgram", "language": "en-US"},
        "tts": {"engine": "espeak", "voice": "en-gb"},
        "policy": {"end_of_turn_silence_ms": 600, "allow_interruptions": False},
    }
    agent = await alice.create_agent(config={"name": "Voice", "voice": voice}, blueprint=valid_blueprint())
    path = f"/agents/{agent['id']}"
    assert agent["config"]["voice"]["stt"] == {"engine": "deepgram", "language": "en-US"}

    found = (await alice.catalog.post(f"{path}/lint", json={})).json()
    assert [d["code"] for d in found["diagnostics"]] == ["voice.missing_key"]
    assert "DEEPGRAM_API_KEY" in found["errors"][0]
    err = assert_error(
        await alice.catalog.patch(f"{path}/status", json={"status": "live"}), 422, "agent.lint_failed"
    )
    assert err["params"]["count"] == 1

    # With the key as an agent secret: clean, and it goes live.
    secrets = [{"key": "DEEPGRAM_API_KEY", "value": "dg-secret"}]
    assert (await alice.catalog.patch(path, json={"secrets": secrets})).status_code == 200
    assert (await alice.catalog.post(f"{path}/lint", json={})).json()["errors"] == []
    assert (await alice.catalog.patch(f"{path}/status", json={"status": "live"})).status_code == 200

    # A live agent's voice cannot be broken by a new config or by taking the key away.
    bad = {"name": "Voice", "voice": {"stt": {"engine": "klingon"}}}
    err = assert_error(await alice.catalog.patch(path, json={"config": bad}), 422, "agent.lint_failed")
    assert "unknown STT engine 'klingon'" in err["params"]["errors"][0]
    assert_error(await alice.catalog.patch(path, json={"secrets": []}), 422, "agent.lint_failed")
    # Fields of the voice config are checked on save.
    typo = {"name": "Voice", "voice": {"stt": {"engine": "whisper", "langauge": "en"}}}
    assert_error(await alice.catalog.patch(path, json={"config": typo}), 422, "request.validation_failed")

    # The runtime snapshot (what the speech workers read the key from) carries voice and secret.
    msg = await nc.request(
        subjects.CATALOG_AGENT_RESOLVE, json.dumps({"agent_id": agent["id"]}).encode(), timeout=5
    )
    snapshot = AgentResolveReply.model_validate_json(msg.data).snapshot
    assert snapshot is not None and snapshot.config.voice is not None
    assert snapshot.config.voice.stt is not None and snapshot.config.voice.stt.engine == "deepgram"
    assert (
        snapshot.config.voice.policy is not None and snapshot.config.voice.policy.allow_interruptions is False
    )
    assert snapshot.secrets["DEEPGRAM_API_KEY"] == "dg-secret"
