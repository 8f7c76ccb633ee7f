"""The API's own tables (keys, idempotency reservations, needs, stalls) share this MetaData.

They live in the event store's database beside settlement's tables; the wiring combines this
MetaData with settlement's for the migrations (`cx/migrations`), which alone make the schema.
"""

from __future__ import annotations

from sqlalchemy import MetaData

metadata = MetaData()
"""Every table of the API: `api.keys`, `api.idempotency`, `api.needs` and `api.stalls`."""
