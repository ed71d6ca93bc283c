"""HTTP: /agents/{agentID}/conversations, /conversations/{conversationID}[/messages]."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from parley_catalog.access import owning_agent
from parley_catalog.agents import service as agents
from parley_catalog.agents.models import Agent
from parley_catalog.context import CatalogContext
from parley_catalog.conversations import schemas, service
from parley_catalog.conversations.models import Conversation
from parley_catalog.cursor import CursorPage
from parley_catalog.deps import AgentsWriter, Db, HistoryReader
from parley_catalog.loaded import Loader, loaded, loader
from parley_catalog.params import AgentID, ConversationID
from parley_catalog.routing import contract_router, deleting
from parley_common.auth_contract import MemberRole, Principal

router = contract_router("conversations")


async def _load(
    ctx: CatalogContext, db: AsyncSession, principal: Principal, conversation_id: UUID, min_role: MemberRole
) -> Conversation:
    """The conversation if the caller holds `min_role` on its agent; 404 for anything unseen."""
    conversation = await service.visible_conversation(db, conversation_id)
    await owning_agent(
        ctx, db, principal, conversation.agent_id if conversation else None, min_role, "conversation"
    )
    assert conversation is not None  # owning_agent found its agent
    return conversation


ViewedConversation = Annotated[Conversation, loaded(_load, ConversationID, HistoryReader, MemberRole.VIEWER)]
DeletedConversation = Annotated[Conversation, loaded(_load, ConversationID, AgentsWriter, MemberRole.ADMIN)]
# Lists (cursor parameters besides the id) load the agent or conversation once every input is read.
LoadListedAgent = Annotated[Loader[Agent], loader(agents.load_for, AgentID, HistoryReader, MemberRole.VIEWER)]
LoadListedConversation = Annotated[
    Loader[Conversation], loader(_load, ConversationID, HistoryReader, MemberRole.VIEWER)
]


@router.get(
    "/agents/{agentID}/conversations",
    summary="List conversations for an agent (requires viewer)",
    description="Newest first. Cursor pagination: pass `next_cursor` back as `after`.",
)
async def list_agent_conversations(
    load: LoadListedAgent, db: Db, page: CursorPage
) -> schemas.ConversationPage:
    return await service.list_conversations(db, (await load()).id, page)


@router.get(
    "/conversations/{conversationID}",
    summary="Get a conversation by ID (requires viewer on the parent agent)",
)
async def get_conversation(conversation: ViewedConversation) -> schemas.Conversation:
    return service.to_schema(conversation)


@deleting(
    router,
    "/conversations/{conversationID}",
    summary="Soft-delete a conversation (requires admin on the parent agent)",
)
async def delete_conversation(conversation: DeletedConversation, db: Db) -> None:
    await service.delete_conversation(db, conversation)
    await db.commit()


@router.get(
    "/conversations/{conversationID}/messages",
    summary="List messages in a conversation (requires viewer on the parent agent)",
    description="In conversation order (`seq`). Cursor pagination: pass `next_cursor` back as `after`.",
)
async def list_conversation_messages(
    load: LoadListedConversation, db: Db, page: CursorPage
) -> schemas.ConversationMessagePage:
    return await service.list_messages(db, (await load()).id, page)
