"""The agent a route names, loaded for the caller (see `parley_catalog.loaded`)."""

from __future__ import annotations

from typing import Annotated

from parley_catalog.agents import service
from parley_catalog.agents.models import Agent
from parley_catalog.deps import AgentsReader
from parley_catalog.loaded import loaded
from parley_catalog.params import AgentID
from parley_common.auth_contract import MemberRole

# `/agents/{agentID}…`, read by a viewer of the agent's owner.
ViewedAgent = Annotated[Agent, loaded(service.load_for, AgentID, AgentsReader, MemberRole.VIEWER)]
