"""Reading an agent folder the way @octavus/cli 2.0.0 does (dist/index.js:42-110)."""

from __future__ import annotations

import json
from pathlib import Path

from parley_common.octavus.models import AgentDefinition, AgentPrompt, AgentSettings


def read_agent_dir(path: str | Path) -> AgentDefinition:
    """settings.json and protocol.yaml are required; prompts/*.md are optional (non-recursive,
    name = file name without `.md`). Raises FileNotFoundError, json/pydantic errors like the CLI
    refuses such folders before it sends anything."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"Directory not found: {root}")
    settings = AgentSettings.model_validate(json.loads((root / "settings.json").read_text("utf-8")))
    protocol = (root / "protocol.yaml").read_text("utf-8")
    prompts_dir = root / "prompts"
    prompts = (
        [AgentPrompt(name=f.name.removesuffix(".md"), content=f.read_text("utf-8"))
         for f in sorted(prompts_dir.iterdir()) if f.name.endswith(".md") and f.is_file()]
        if prompts_dir.is_dir() else []
    )  # fmt: skip
    return AgentDefinition(settings=settings, protocol=protocol, prompts=prompts)
