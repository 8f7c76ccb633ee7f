"""Configuration, read once from the environment (one documented name per setting)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where the log and the event store are, and how the API listens.

    Leaving KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL unset selects the embedded default: the
    in-process log and a SQLite event store, both kept under CX_DATA_DIR.
    """

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    kafka_bootstrap_servers: str | None = Field(
        default=None, validation_alias="KAFKA_BOOTSTRAP_SERVERS"
    )
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    data_dir: Path = Field(default=Path(".cx-data"), validation_alias="CX_DATA_DIR")
    api_host: str = Field(default="127.0.0.1", validation_alias="CX_API_HOST")
    api_port: int = Field(default=8000, validation_alias="CX_API_PORT")
    api_rate: float = Field(default=20.0, gt=0, validation_alias="CX_API_RATE")
    """Requests a second each API key may make on average (anonymous callers: 5x, per address)."""
    api_burst: int = Field(default=40, ge=1, validation_alias="CX_API_BURST")
    """Requests an API key may make at once before the average rate applies."""
    command_partitions: int = Field(default=4, ge=1, validation_alias="CX_COMMAND_PARTITIONS")
    market_partitions: int = Field(default=4, ge=1, validation_alias="CX_MARKET_PARTITIONS")
    topic_prefix: str = Field(default="cx", validation_alias="CX_TOPIC_PREFIX")
    snapshot_every: int = Field(default=10_000, ge=1, validation_alias="CX_SNAPSHOT_EVERY")
    """Input records per partition between two snapshots of the risk and matching stages."""

    @property
    def embedded_log(self) -> bool:
        """True when no Kafka is configured."""
        return not self.kafka_bootstrap_servers

    def event_store_url(self) -> str:
        """DATABASE_URL, or the embedded SQLite file under the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'events.sqlite3').resolve()}"
