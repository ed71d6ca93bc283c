"""Turn-taking policy: from VAD events (and whether the agent is speaking) to turn decisions.

Pure and clocked by the audio itself (ms since the session's first sample), so it is exact and
testable with synthetic event sequences. It decides:

- **Endpointing.** A user turn ends when speech has stopped for `end_of_turn_silence_ms`; pauses
  shorter than that stay in the same utterance. An utterance longer than `max_utterance_ms` is
  ended there.
- **Noise.** Speech totalling less than `min_speech_ms` is no turn (`Discarded`).
- **Echo.** While the agent speaks, speech that *starts* within `echo_warmup_ms` of the agent's
  first audio is taken for the agent's own voice coming back through the microphone and ignored
  to its end; and speech must total `barge_in_min_speech_ms` (not just `min_speech_ms`) to count.
- **Barge-in.** Speech that counts while the agent speaks interrupts it (`BargeIn`), unless
  interruptions are off, in which case it is ignored.

The worker turns the decisions into events (`SpeechStarted`, `BargeIn`, `SpeechStopped`) and
feeds the utterance's audio to STT between `UtteranceBegan` and `EndOfTurn`.
"""

from __future__ import annotations

from dataclasses import dataclass

from parley_common.speech_contract import VoicePolicyConfig
from parley_speech.engines.silero import VadEvent


@dataclass(frozen=True)
class PolicyConfig:
    end_of_turn_silence_ms: int = 400
    min_speech_ms: int = 200
    echo_warmup_ms: int = 300
    barge_in_min_speech_ms: int = 300
    allow_interruptions: bool = True
    max_utterance_ms: int = 30_000

    def with_overrides(self, overrides: VoicePolicyConfig | None) -> PolicyConfig:
        if overrides is None:
            return self
        values = {k: v for k, v in overrides.model_dump().items() if v is not None and hasattr(self, k)}
        return PolicyConfig(**{**self.__dict__, **values})


@dataclass(frozen=True)
class _Utterance:
    """What every decision about an utterance names: which one, and where its speech began."""

    utterance: int
    start_ms: int


class UtteranceBegan(_Utterance):
    """Possible speech from `start_ms`: start feeding STT (with pre-roll)."""


class SpeechConfirmed(_Utterance):
    """The utterance has enough speech to count (a turn, or a barge-in while the agent speaks)."""


@dataclass(frozen=True)
class BargeIn:
    utterance: int
    at_ms: int


@dataclass(frozen=True)
class _Ended(_Utterance):
    end_ms: int  # where speech ended


class EndOfTurn(_Ended):
    """The user's turn: recognize what was fed to STT."""


@dataclass(frozen=True)
class Discarded(_Ended):
    """Not a turn (noise, too short, echo): drop what was fed to STT."""

    reason: str


Action = UtteranceBegan | SpeechConfirmed | BargeIn | EndOfTurn | Discarded


@dataclass
class _Candidate:
    utterance: int
    start_ms: int
    seg_start: int | None
    speech_ms: int = 0
    last_end: int = 0
    confirmed: bool = False
    barged: bool = False
    # The agent was speaking at some point during this candidate: the stricter bar applies.
    over_agent: bool = False

    def speech_at(self, now: int) -> int:
        return self.speech_ms + (max(now - self.seg_start, 0) if self.seg_start is not None else 0)


class TurnPolicy:
    def __init__(
        self, config: PolicyConfig, *, next_utterance: int = 1, agent_speaking: bool = False
    ) -> None:
        self.config = config
        self.next_utterance = next_utterance
        self.agent_speaking = agent_speaking
        # A session re-opened while the agent speaks is past its warm-up already.
        self.agent_since = -config.echo_warmup_ms if agent_speaking else 0
        self.candidate: _Candidate | None = None
        self._ignoring = False  # inside a VAD segment that began as echo

    @property
    def in_utterance(self) -> bool:
        return self.candidate is not None

    # ---------------------------------------------------------------------------------- inputs

    def on_vad(self, event: VadEvent) -> list[Action]:
        t = event.at_ms
        out = self.on_time(t)
        if event.kind == "start":
            if self.agent_speaking and t - self.agent_since < self.config.echo_warmup_ms:
                self._ignoring = True
                return out
            self._ignoring = False
            if self.candidate is None:
                self.candidate = _Candidate(self.next_utterance, t, t, over_agent=self.agent_speaking)
                out.append(UtteranceBegan(self.candidate.utterance, t))
            elif self.candidate.seg_start is None:
                self.candidate.seg_start = t
            return out
        # end
        if self._ignoring:
            self._ignoring = False
            return out
        c = self.candidate
        if c is not None and c.seg_start is not None:
            c.speech_ms += max(t - c.seg_start, 0)
            c.seg_start = None
            c.last_end = t
            out += self._check(t)
        return out

    def on_agent_speaking(self, speaking: bool, now_ms: int) -> list[Action]:
        out = self.on_time(now_ms)
        if speaking and not self.agent_speaking:
            self.agent_since = now_ms
            if self.candidate is not None:
                self.candidate.over_agent = True
        self.agent_speaking = speaking
        return out

    def on_time(self, now_ms: int) -> list[Action]:
        """The audio reached `now_ms` (call it for every chunk, and while the line is idle)."""
        c = self.candidate
        if c is None:
            return []
        out = self._check(now_ms)
        c = self.candidate
        if c is None:
            return out
        if c.seg_start is None and now_ms - c.last_end >= self.config.end_of_turn_silence_ms:
            out.append(self._close(c.last_end))
        elif now_ms - c.start_ms >= self.config.max_utterance_ms:
            speaking = c.seg_start is not None
            out.append(self._close(now_ms))
            if speaking:  # the user goes on: that is the next utterance
                self.candidate = _Candidate(
                    self.next_utterance, now_ms, now_ms, over_agent=self.agent_speaking
                )
                out.append(UtteranceBegan(self.candidate.utterance, now_ms))
        return out

    def force_end(self, now_ms: int) -> list[Action]:
        """The edge says the user is done (push-to-talk released, or the audio stopped)."""
        c = self.candidate
        self._ignoring = False
        if c is None:
            return []
        if c.seg_start is not None:
            c.speech_ms += max(now_ms - c.seg_start, 0)
            c.seg_start = None
            c.last_end = now_ms
        out = self._check(now_ms)
        if self.candidate is not None:
            out.append(self._close(self.candidate.last_end))
        return out

    # -------------------------------------------------------------------------------- internals

    def _required(self, c: _Candidate) -> int:
        if c.over_agent or self.agent_speaking:
            return max(self.config.barge_in_min_speech_ms, self.config.min_speech_ms)
        return self.config.min_speech_ms

    def _check(self, now_ms: int) -> list[Action]:
        c = self.candidate
        if c is None or c.confirmed:
            return []
        if c.speech_at(now_ms) < self._required(c):
            return []
        if (c.over_agent or self.agent_speaking) and not self.config.allow_interruptions:
            return []  # never confirmed: closed as Discarded("interruptions off") at its end
        c.confirmed = True
        # Numbers go to confirmed utterances only: a discarded candidate's number is reused.
        self.next_utterance = c.utterance + 1
        out: list[Action] = [SpeechConfirmed(c.utterance, c.start_ms)]
        if self.agent_speaking:
            c.barged = True
            out.append(BargeIn(c.utterance, now_ms))
        return out

    def _close(self, end_ms: int) -> Action:
        c = self.candidate
        assert c is not None
        self.candidate = None
        if c.confirmed:
            return EndOfTurn(c.utterance, c.start_ms, end_ms)
        if (c.over_agent or self.agent_speaking) and not self.config.allow_interruptions:
            reason = "interruptions_off"
        else:
            reason = "too_short"
        return Discarded(c.utterance, c.start_ms, end_ms, reason)
