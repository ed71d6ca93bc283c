"""Octavus-compatible agent endpoints (`/api/agents…`), as @octavus/cli 2.0.0 calls them.

Protocol agents are ordinary catalog agents whose `protocol` column holds the definition and
whose `slug` is settings.slug; see docs/octavus-cli.md and docs/octavus-wire.md.
"""
