"""Process-wide dependencies of the catalog service, built once per app."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from faststream.nats import NatsBroker

from parley_catalog.crypto import SecretBox
from parley_catalog.db import Database
from parley_catalog.settings import CatalogSettings
from parley_common.auth_client import AuthClient


@dataclass
class CatalogContext:
    settings: CatalogSettings
    db: Database
    broker: NatsBroker
    auth: AuthClient
    box: SecretBox
    # Webhook tool calls (no redirects followed: a redirect could lead past the address guard).
    http: httpx.AsyncClient
