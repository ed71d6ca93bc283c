"""Parley speech workers: VAD, speech-to-text and text-to-speech served over NATS."""
