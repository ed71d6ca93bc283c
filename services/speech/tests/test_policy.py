"""The turn policy on synthetic VAD event sequences (audio-clocked, so exact)."""

from __future__ import annotations

from parley_common.speech_contract import VoicePolicyConfig
from parley_speech.engines.silero import VadEvent
from parley_speech.policy import (
    Action,
    BargeIn,
    Discarded,
    EndOfTurn,
    PolicyConfig,
    SpeechConfirmed,
    TurnPolicy,
    UtteranceBegan,
)

CONFIG = PolicyConfig(
    end_of_turn_silence_ms=400, min_speech_ms=200, echo_warmup_ms=300, barge_in_min_speech_ms=500
)


def run(
    policy: TurnPolicy, script: list[tuple[str, int] | tuple[str, int, bool]], until: int
) -> list[Action]:
    """Feed `("start"|"end", ms)` VAD events and `("agent", ms, speaking)`, with the audio clock
    ticking every 20 ms up to `until`."""
    out: list[Action] = []
    events = sorted(script, key=lambda e: e[1])
    t = 0
    for event in events:
        while t < event[1]:
            out += policy.on_time(t)
            t += 20
        if event[0] == "agent":
            out += policy.on_agent_speaking(bool(event[2]), event[1])  # type: ignore[misc]
        else:
            out += policy.on_vad(VadEvent(event[0], event[1]))  # type: ignore[arg-type]
    while t <= until:
        out += policy.on_time(t)
        t += 20
    return out


def kinds(actions: list[Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


def test_one_utterance_ends_after_the_silence_window() -> None:
    actions = run(TurnPolicy(CONFIG), [("start", 1000), ("end", 2000)], until=3000)
    assert kinds(actions) == ["UtteranceBegan", "SpeechConfirmed", "EndOfTurn"]
    began, confirmed, end = actions
    assert began == UtteranceBegan(1, 1000)
    assert confirmed == SpeechConfirmed(1, 1000)
    assert end == EndOfTurn(1, 1000, 2000)
    # Endpointing: the turn ended exactly end_of_turn_silence_ms after the speech did.
    policy = TurnPolicy(CONFIG)
    ended_at = None
    for t in range(0, 3000, 20):
        if t == 1000:
            policy.on_vad(VadEvent("start", t))
        if t == 2000:
            policy.on_vad(VadEvent("end", t))
        if any(isinstance(a, EndOfTurn) for a in policy.on_time(t)):
            ended_at = t
    assert ended_at == 2400


def test_pauses_shorter_than_the_window_stay_in_one_utterance() -> None:
    script = [("start", 0), ("end", 600), ("start", 900), ("end", 1500), ("start", 1850), ("end", 2400)]
    actions = run(TurnPolicy(CONFIG), script, until=4000)  # type: ignore[arg-type]
    assert kinds(actions) == ["UtteranceBegan", "SpeechConfirmed", "EndOfTurn"]
    assert actions[-1] == EndOfTurn(1, 0, 2400)


def test_two_turns_are_numbered_and_short_noise_is_discarded_without_a_number() -> None:
    script = [("start", 0), ("end", 500), ("start", 2000), ("end", 2100), ("start", 4000), ("end", 4800)]
    actions = run(TurnPolicy(CONFIG), script, until=6000)  # type: ignore[arg-type]
    ends = [a for a in actions if isinstance(a, EndOfTurn | Discarded)]
    assert ends == [EndOfTurn(1, 0, 500), Discarded(2, 2000, 2100, "too_short"), EndOfTurn(2, 4000, 4800)]


def test_speech_confirms_as_soon_as_it_is_long_enough_not_at_its_end() -> None:
    policy = TurnPolicy(CONFIG)
    policy.on_vad(VadEvent("start", 0))
    assert policy.on_time(180) == []
    assert policy.on_time(200) == [SpeechConfirmed(1, 0)]


def test_echo_in_the_warmup_window_is_ignored_to_its_end() -> None:
    # The agent starts speaking at 1000; its echo is heard from 1100 to 2500 (starts in warm-up).
    script = [("agent", 1000, True), ("start", 1100), ("end", 2500)]
    actions = run(TurnPolicy(CONFIG), script, until=4000)  # type: ignore[arg-type]
    assert actions == []


def test_barge_in_needs_the_longer_minimum_while_the_agent_speaks() -> None:
    # Agent speaking since 0 (warm-up over at 300). A 300 ms "uh-huh" does not interrupt...
    script = [("agent", 0, True), ("start", 1000), ("end", 1300)]
    actions = run(TurnPolicy(CONFIG), script, until=2500)  # type: ignore[arg-type]
    assert kinds(actions) == ["UtteranceBegan", "Discarded"]
    # ...real speech does, once it has lasted barge_in_min_speech_ms.
    policy = TurnPolicy(CONFIG)
    script = [("agent", 0, True), ("start", 1000), ("end", 2500)]
    actions = run(policy, script, until=3500)  # type: ignore[arg-type]
    assert kinds(actions) == ["UtteranceBegan", "SpeechConfirmed", "BargeIn", "EndOfTurn"]
    barge = next(a for a in actions if isinstance(a, BargeIn))
    assert barge.at_ms == 1500


def test_no_barge_in_when_interruptions_are_off() -> None:
    config = CONFIG.with_overrides(VoicePolicyConfig(allow_interruptions=False))
    script = [("agent", 0, True), ("start", 1000), ("end", 2500)]
    actions = run(TurnPolicy(config), script, until=3500)  # type: ignore[arg-type]
    assert kinds(actions) == ["UtteranceBegan", "Discarded"]
    assert actions[-1].reason == "interruptions_off"  # type: ignore[union-attr]


def test_after_the_agent_stops_the_normal_minimum_applies_again() -> None:
    script = [("agent", 0, True), ("agent", 800, False), ("start", 1000), ("end", 1250)]
    actions = run(TurnPolicy(CONFIG), script, until=2000)  # type: ignore[arg-type]
    assert kinds(actions) == ["UtteranceBegan", "SpeechConfirmed", "EndOfTurn"]


def test_a_reopened_session_while_the_agent_speaks_is_past_its_warmup() -> None:
    policy = TurnPolicy(CONFIG, next_utterance=7, agent_speaking=True)
    actions = run(policy, [("start", 100), ("end", 900)], until=1500)
    assert kinds(actions) == ["UtteranceBegan", "SpeechConfirmed", "BargeIn", "EndOfTurn"]
    assert actions[0] == UtteranceBegan(7, 100)


def test_force_end_closes_the_turn_now_and_long_utterances_are_split() -> None:
    policy = TurnPolicy(CONFIG)
    policy.on_vad(VadEvent("start", 0))
    assert kinds(policy.force_end(700)) == ["SpeechConfirmed", "EndOfTurn"]
    assert policy.force_end(800) == []

    config = PolicyConfig(max_utterance_ms=2000)
    actions = run(TurnPolicy(config), [("start", 0), ("end", 3000)], until=4000)
    assert kinds(actions) == [
        "UtteranceBegan",
        "SpeechConfirmed",
        "EndOfTurn",
        "UtteranceBegan",
        "SpeechConfirmed",
        "EndOfTurn",
    ]
    assert actions[2] == EndOfTurn(1, 0, 2000)
    assert actions[5] == EndOfTurn(2, 2000, 3000)


def test_overrides_take_only_the_fields_given() -> None:
    config = PolicyConfig().with_overrides(VoicePolicyConfig(end_of_turn_silence_ms=900, vad_threshold=0.7))
    assert config.end_of_turn_silence_ms == 900 and config.min_speech_ms == PolicyConfig().min_speech_ms
