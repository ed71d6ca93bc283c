"""Who calls the Octavus routes: a Bearer API key only, verified by auth over the bus.

The CLI and the server SDK send `Authorization: Bearer <key>`; browser sessions and client tokens
do not reach these routes.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from parley_common.auth_contract import Principal
from parley_common.octavus.routes import api_key

KeyReader = Annotated[Principal, Depends(api_key("agents:read"))]
KeyWriter = Annotated[Principal, Depends(api_key("agents:write"))]
