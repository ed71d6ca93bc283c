"""Path parameters shared by the routers (names as in the Kivox spec)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Path

OrgSlug = Annotated[
    str, Path(alias="orgSlug", min_length=1, max_length=64, description="URL-safe organization identifier.")
]
AgentID = Annotated[UUID, Path(alias="agentID")]
TemplateID = Annotated[UUID, Path(alias="templateID")]
ConversationID = Annotated[UUID, Path(alias="conversationID")]
ToolID = Annotated[UUID, Path(alias="toolID")]
