"""Import every table so Alembic and `Base.metadata` see the whole schema."""

from parley_catalog.agent_tests.models import (
    AgentTest,
    AgentTestMessage,
    AgentTestRemark,
    AgentTestRun,
    AgentTestSettings,
)
from parley_catalog.agents.models import Agent
from parley_catalog.conversations.models import Conversation, Message, ProcessedEvent
from parley_catalog.db import Base
from parley_catalog.templates.models import Template
from parley_catalog.tools.models import Tool

__all__ = [
    "Agent",
    "AgentTest",
    "AgentTestMessage",
    "AgentTestRemark",
    "AgentTestRun",
    "AgentTestSettings",
    "Base",
    "Conversation",
    "Message",
    "ProcessedEvent",
    "Template",
    "Tool",
]
