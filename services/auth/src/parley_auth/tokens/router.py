"""HTTP: POST /chat/tokens and POST /voice/tokens, minted with an API key."""

from __future__ import annotations

from fastapi import status

from parley_auth.deps import Ctx, Db, Minter
from parley_auth.routing import contract_router
from parley_auth.tokens import schemas, service
from parley_auth.tokens.models import ClientToken
from parley_common.auth_contract import Principal

router = contract_router("tokens")


async def _mint(
    ctx: Ctx,
    db: Db,
    principal: Principal,
    body: schemas.CreateChatTokenRequest | schemas.CreateVoiceTokenRequest,
    token_type: service.TokenType,
) -> tuple[str, ClientToken]:
    """Mint and store a client token of `token_type` (rate limited per credential)."""
    await ctx.limiter.hit(
        "tokens:account", ctx.settings.auth_rate_token_mint_account, str(principal.credential_id)
    )
    token, row = await service.mint(
        db,
        ctx.settings,
        principal,
        token_type=token_type,
        agent_id=body.workflow_id,
        env=body.env,
        ttl_seconds=body.ttl_seconds,
        data=body.data,
    )
    await db.commit()
    return token, row


@router.post(
    "/chat/tokens",
    status_code=status.HTTP_201_CREATED,
    summary="Create a scoped client token for the chat WebSocket",
)
async def create_chat_token(
    body: schemas.CreateChatTokenRequest, ctx: Ctx, db: Db, principal: Minter
) -> schemas.CreateChatTokenResponse:
    token, row = await _mint(ctx, db, principal, body, "chat")
    return schemas.CreateChatTokenResponse(token=token, expires_at=row.expires_at)


@router.post(
    "/voice/tokens",
    status_code=status.HTTP_201_CREATED,
    summary="Create a scoped client token for a voice session",
)
async def create_voice_token(
    body: schemas.CreateVoiceTokenRequest, ctx: Ctx, db: Db, principal: Minter
) -> schemas.CreateVoiceTokenResponse:
    token, row = await _mint(ctx, db, principal, body, "voice")
    ws_base = ctx.settings.public_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return schemas.CreateVoiceTokenResponse(
        url=f"{ws_base.rstrip('/')}/realtime", token=token, room_name=f"room-{row.id}", run_id=str(row.id)
    )
