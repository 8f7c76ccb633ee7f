"""Configuration, read once from the environment (one documented name per setting)."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from exchange.domain.catalogue import (
    HOUR_MS,
    MAX_LISTING_DAYS,
    MAX_TERM_DAYS,
    Catalogue,
    ListingRule,
    MarketRules,
    RuleChange,
    default_catalogue,
    parse_family,
)
from exchange.domain.operators import OperatorSeal


class Settings(BaseSettings):
    """Where the log and the event store are, and how the API listens.

    Leaving KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL unset selects the embedded default: the
    in-process log and a SQLite event store, both kept under CX_DATA_DIR.
    """

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    kafka_bootstrap_servers: str | None = Field(
        default=None, validation_alias="KAFKA_BOOTSTRAP_SERVERS"
    )
    kafka_replication_factor: int = Field(
        default=1, ge=1, validation_alias="CX_KAFKA_REPLICATION_FACTOR"
    )
    """How many brokers keep each topic the exchange creates (3 on the cluster of
    `CX_SERVICES_MODE=cluster infra/services.sh`; 1 for a single broker)."""
    kafka_min_insync_replicas: int = Field(
        default=1, ge=1, validation_alias="CX_KAFKA_MIN_INSYNC_REPLICAS"
    )
    """How many of them must hold a record before a producer (acks=all) is told it is stored
    (2 on the cluster: one broker may be lost without losing an acknowledged record)."""
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    """A PostgreSQL URL may name several servers, of which the exchange uses the one taking
    writes: `postgresql+asyncpg://user:password@/db?host=H1:P1&host=H2:P2&target_session_attrs=read-write`."""
    settlement_shards: str = Field(default="", validation_alias="CX_SETTLEMENT_SHARDS")
    """Database URLs (space-separated: a URL may hold commas) of the settlement shards after
    the home shard, which is DATABASE_URL (or the embedded SQLite): with N URLs here
    settlement runs in N+1 shards, and events-topic partition P (every family hashed to it)
    settles in shard P mod (N+1). Empty: one shard, the home database (docs/DESIGN.md,
    "Settlement in shards")."""
    data_dir: Path = Field(default=Path(".cx-data"), validation_alias="CX_DATA_DIR")
    api_host: str = Field(default="127.0.0.1", validation_alias="CX_API_HOST")
    api_port: int = Field(default=8000, validation_alias="CX_API_PORT")
    api_rate: float = Field(default=20.0, gt=0, validation_alias="CX_API_RATE")
    """Requests a second each API key may make on average (anonymous callers: 5x, per address)."""
    api_burst: int = Field(default=40, ge=1, validation_alias="CX_API_BURST")
    """Requests an API key may make at once before the average rate applies."""
    key_cache_seconds: float = Field(default=5.0, gt=0, validation_alias="CX_KEY_CACHE_SECONDS")
    """How long the API trusts a verified key without asking the database again: a key revoked
    through another API process or `cx keys revoke` stops working within this time."""
    key_outage_seconds: float = Field(default=60.0, ge=0, validation_alias="CX_KEY_OUTAGE_SECONDS")
    """While the database cannot be asked, how long after its last check a key still works (at
    least CX_KEY_CACHE_SECONDS): the longest a key revoked elsewhere can live in an outage."""
    command_partitions: int = Field(default=4, ge=1, validation_alias="CX_COMMAND_PARTITIONS")
    market_partitions: int = Field(default=4, ge=1, validation_alias="CX_MARKET_PARTITIONS")
    topic_prefix: str = Field(default="cx", validation_alias="CX_TOPIC_PREFIX")
    gate_closure_minutes: int | None = Field(
        default=60, ge=0, validation_alias="CX_GATE_CLOSURE_MINUTES"
    )
    price_band: int = Field(default=0, ge=0, validation_alias="CX_PRICE_BAND")
    market_protection: int = Field(default=0, ge=0, validation_alias="CX_MARKET_PROTECTION")
    halt_seconds: int = Field(default=60, ge=1, validation_alias="CX_HALT_SECONDS")
    pre_open: bool = Field(default=False, validation_alias="CX_PRE_OPEN")
    day_ahead_gate: str = Field(default="", validation_alias="CX_DAY_AHEAD_GATE")
    """The day-ahead auction's gate (`HH:MM[:SS]`, CST, the day before delivery),
    e.g. `12:00`; empty: no day-ahead auction, every contract trades continuously at once."""
    intraday_auction_hours: int = Field(
        default=0, ge=0, le=24, validation_alias="CX_INTRADAY_AUCTION_HOURS"
    )
    """Hours between intraday auctions (every N hours from 00:00 CST, N dividing 24; 0: none):
    each clears, at one price per contract-hour, every hour trading continuously with the
    exclusive groups waiting for it (needs that arrive after the day-ahead gate)."""
    tick_seconds: float = Field(default=30.0, gt=0, validation_alias="CX_TICK_SECONDS")
    """How often the API's node ticks every market partition, so that expiries, gate closures
    and deliveries fall due on a quiet market too."""
    stall_seconds: float = Field(default=30.0, gt=0, validation_alias="CX_STALL_SECONDS")
    """A stage whose lag has not moved for this long is reported stalled (`/v1/health` 503)."""
    snapshot_every: int = Field(default=10_000, ge=1, validation_alias="CX_SNAPSHOT_EVERY")
    """Input records per partition between two snapshots of the risk and matching stages."""
    fees: str = Field(default="", validation_alias="CX_FEES")
    """Maker and taker fees per resource class in basis points, e.g. `H100-80G:-2:10,CPU:0:5`
    (a negative maker fee is a rebate)."""
    bond_bps: int = Field(default=0, ge=0, le=10_000, validation_alias="CX_BOND_BPS")
    """Providers' delivery bond in basis points of their sell orders' limit price."""
    delivery_window_minutes: int = Field(
        default=120, ge=0, validation_alias="CX_DELIVERY_WINDOW_MINUTES"
    )
    """How long after a delivery hour metering and disputes are accepted."""
    recall_notice_minutes: int = Field(
        default=120, ge=0, validation_alias="CX_RECALL_NOTICE_MINUTES"
    )
    """How long before delivery a recallable deposit's sold units may still be recalled."""
    recall_compensation_bps: int = Field(
        default=1_000, ge=0, le=10_000, validation_alias="CX_RECALL_COMPENSATION_BPS"
    )
    """What a recalled unit's holder gets on top of its refund, in basis points of the refund,
    from the provider's bond."""
    listings: str = Field(default="", validation_alias="CX_LISTINGS")
    """Families (`CLASS.REGION`, comma-separated) whose delivery hours list on a rolling
    horizon; empty: only the fixed default contracts."""
    listing_days: int = Field(
        default=30, ge=0, le=MAX_LISTING_DAYS, validation_alias="CX_LISTING_DAYS"
    )
    """How many days beyond today the rolled families list: a month to plan on by default
    (docs/BENCHMARKS.md, "Listing horizon", says what it costs)."""
    term_days: int = Field(
        default=MAX_TERM_DAYS, ge=0, le=MAX_TERM_DAYS, validation_alias="CX_TERM_DAYS"
    )
    """How many days ahead the rolled families' term contracts (weeks, nights and months of
    capacity, week and month token bundles) list by their start (default three months; 0: none)."""
    operator_keys: SecretStr = Field(default=SecretStr(""), validation_alias="CX_OPERATOR_KEYS")
    """Secrets (comma-separated) the API signs operator commands with and the risk stage
    verifies them with; the first signs, all verify (keep a rotated-out key while commands it
    signed may be replayed). Empty: a key generated once in CX_DATA_DIR/operator.key, enough
    when the API and risk share a data directory; set it everywhere when they do not."""

    @field_validator("listings")
    @classmethod
    def _families_follow_the_grammar(cls, value: str) -> str:
        for family in _families(value):
            parse_family(family)
        return value

    @field_validator("day_ahead_gate")
    @classmethod
    def _gate_is_a_time_of_day(cls, value: str) -> str:
        if value:
            _ms_of_day(value)
        return value

    @model_validator(mode="after")
    def _insync_replicas_fit_the_replication_factor(self) -> Settings:
        if self.kafka_min_insync_replicas > self.kafka_replication_factor:
            raise ValueError(
                f"CX_KAFKA_MIN_INSYNC_REPLICAS ({self.kafka_min_insync_replicas}) cannot exceed "
                f"CX_KAFKA_REPLICATION_FACTOR ({self.kafka_replication_factor})"
            )
        return self

    @model_validator(mode="after")
    def _every_shard_settles_a_partition(self) -> Settings:
        shards = len(self.shard_urls())
        if shards > self.market_partitions:
            raise ValueError(
                f"CX_SETTLEMENT_SHARDS names {shards} shards with the home database, more than "
                f"the {self.market_partitions} events partitions (CX_MARKET_PARTITIONS) they "
                "split: a shard would settle nothing"
            )
        return self

    @model_validator(mode="after")
    def _intraday_auctions_follow_a_day_ahead_auction(self) -> Settings:
        if self.intraday_auction_hours and 24 % self.intraday_auction_hours:
            raise ValueError(
                f"CX_INTRADAY_AUCTION_HOURS must divide 24, not {self.intraday_auction_hours}"
            )
        if self.intraday_auction_hours and not self.day_ahead_gate:
            raise ValueError(
                "CX_INTRADAY_AUCTION_HOURS needs CX_DAY_AHEAD_GATE: intraday auctions run on "
                "the day-ahead auction's stage, for the hours it has opened"
            )
        return self

    @property
    def embedded_log(self) -> bool:
        """True when no Kafka is configured."""
        return not self.kafka_bootstrap_servers

    def market_rules(self) -> MarketRules:
        """The rules contracts trade under, from CX_GATE_CLOSURE_MINUTES and the rest."""
        return MarketRules(
            gate_closure_ms=None
            if self.gate_closure_minutes is None
            else self.gate_closure_minutes * 60_000,
            band=self.price_band,
            protection=self.market_protection,
            halt_ms=self.halt_seconds * 1000,
            pre_open=self.pre_open,
            fees=parse_fees(self.fees),
            bond_bps=self.bond_bps,
            delivery_window_ms=self.delivery_window_minutes * 60_000,
            recall_notice_ms=self.recall_notice_minutes * 60_000,
            recall_compensation_bps=self.recall_compensation_bps,
            day_ahead_gate_ms=_ms_of_day(self.day_ahead_gate) if self.day_ahead_gate else None,
            intraday_every_ms=self.intraday_auction_hours * HOUR_MS or None,
        )

    def listing_rules(self) -> list[ListingRule]:
        """The rolling listings CX_LISTINGS, CX_LISTING_DAYS and CX_TERM_DAYS ask for (none
        when CX_LISTINGS is empty)."""
        families = _families(self.listings)
        return [ListingRule(families, self.listing_days, self.term_days)] if families else []

    def catalogue(self) -> Catalogue:
        """The catalogue every stage, replay and audit of this exchange uses."""
        return default_catalogue(self.market_rules(), self.listing_rules())

    def operator_seal(self) -> OperatorSeal:
        """The seal of operator commands, from CX_OPERATOR_KEYS or the data directory's key."""
        configured = [k.strip() for k in self.operator_keys.get_secret_value().split(",")]
        keys = [k.encode() for k in configured if k]
        if not keys:
            keys = [_data_dir_key(self.data_dir / "operator.key")]
        return OperatorSeal(keys)

    def shard_urls(self) -> list[str]:
        """The settlement shards' databases, the home shard (`event_store_url`) first."""
        return [self.event_store_url(), *self.settlement_shards.split()]

    def event_store_url(self) -> str:
        """DATABASE_URL, or the embedded SQLite file under the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'events.sqlite3').resolve()}"


def parse_fees(text: str) -> tuple[tuple[str, int, int], ...]:
    """`CLASS:MAKER:TAKER,...` as (class, maker bps, taker bps), sorted by class, so the same
    schedule written in another order is the same rule (the market rules recorded with a
    history compare equal); raises ValueError saying what is wrong, a class given twice
    included."""
    schedule: list[tuple[str, int, int]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        fields = item.split(":")
        if len(fields) != 3:
            raise ValueError(f"fee {item!r} is not CLASS:MAKER_BPS:TAKER_BPS")
        resource_class, maker, taker = fields
        try:
            maker_bps, taker_bps = int(maker), int(taker)
        except ValueError:
            raise ValueError(f"fee {item!r}: basis points must be integers") from None
        if not -10_000 < maker_bps <= 10_000 or not 0 <= taker_bps <= 10_000:
            raise ValueError(f"fee {item!r}: maker must be in (-10000, 10000], taker in [0, 10000]")
        if maker_bps < 0 and -maker_bps > taker_bps:
            raise ValueError(f"fee {item!r}: a maker rebate larger than the taker fee loses money")
        if any(listed == resource_class for listed, _, _ in schedule):
            raise ValueError(f"fee {item!r}: class {resource_class!r} is given a fee twice")
        schedule.append((resource_class, maker_bps, taker_bps))
    return tuple(sorted(schedule))


def _data_dir_key(path: Path) -> bytes:
    """The key kept at `path`, made (readable by its owner only) if it does not exist yet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(descriptor, "w") as file:
        file.write(secrets.token_hex(32))
    return path.read_bytes().strip()


def _families(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _ms_of_day(value: str) -> int:
    """Milliseconds after midnight of a time of day `HH:MM` or `HH:MM:SS`."""
    parts = value.split(":")
    if not (2 <= len(parts) <= 3 and all(p.isdigit() and len(p) == 2 for p in parts)):
        raise ValueError(f"{value!r} is not a time of day HH:MM or HH:MM:SS")
    hours, minutes, seconds = (int(p) for p in [*parts, "00"][:3])
    if not (hours < 24 and minutes < 60 and seconds < 60):
        raise ValueError(f"{value!r} is not a time of day from 00:00 to 23:59:59")
    return ((hours * 60 + minutes) * 60 + seconds) * 1000


RULE_SETTINGS: dict[str, tuple[str | None, str]] = {
    "gate_closure_ms": ("CX_GATE_CLOSURE_MINUTES", "闭市 gate closure, minutes before delivery"),
    "band": ("CX_PRICE_BAND", "价格带 price band, fen"),
    "protection": ("CX_MARKET_PROTECTION", "市价单保护 market order protection, fen"),
    "halt_ms": ("CX_HALT_SECONDS", "暂停时长 halt, seconds"),
    "pre_open": ("CX_PRE_OPEN", "开盘集合竞价 opening auction"),
    "fees": ("CX_FEES", "手续费 fees, basis points"),
    "bond_bps": ("CX_BOND_BPS", "交付保证金 delivery bond, basis points"),
    "delivery_window_ms": ("CX_DELIVERY_WINDOW_MINUTES", "交付确认期 delivery window, minutes"),
    "recall_notice_ms": ("CX_RECALL_NOTICE_MINUTES", "召回通知期 recall notice, minutes"),
    "recall_compensation_bps": (
        "CX_RECALL_COMPENSATION_BPS",
        "召回补偿 recall compensation, basis points",
    ),
    "voucher_max_rate_bps": (None, "算力券最高补贴比例 highest voucher rate, basis points"),
    "voucher_max_cap_per_enterprise": (None, "每家企业算力券上限 voucher cap per enterprise, fen"),
    "voucher_kinds": (None, "算力券适用企业类型 enterprise kinds vouchers cover"),
    "voucher_cities": (None, "算力券适用城市 cities vouchers cover"),
    "day_ahead_gate_ms": ("CX_DAY_AHEAD_GATE", "日前竞价截止 day-ahead gate, CST"),
    "intraday_every_ms": ("CX_INTRADAY_AUCTION_HOURS", "日内竞价间隔 intraday auctions, hours"),
    "listed_families": ("CX_LISTINGS", "滚动上市的合约族 rolled families"),
    "listing_days": ("CX_LISTING_DAYS", "小时合约上市天数 days the hours list ahead"),
    "term_days": ("CX_TERM_DAYS", "期限合约上市天数 days the terms list ahead"),
    "static_contracts": (None, "固定合约 static contracts"),
}
"""Each recorded market rule (`Catalogue.rules_record`): the environment variable that sets
it (None: the release's own, set by no variable) and what it is, Chinese first."""


def _rule_env_value(setting: str, value: Any) -> str | None:
    """A recorded rule's value as its environment variable takes it (None: it cannot)."""
    if setting in ("gate_closure_ms", "delivery_window_ms", "recall_notice_ms"):
        return str(value // 60_000) if isinstance(value, int) and value % 60_000 == 0 else None
    if setting == "halt_ms":
        return str(value // 1000) if value % 1000 == 0 else None
    if setting == "pre_open":
        return "true" if value else "false"
    if setting == "fees":
        return ",".join(f"{code}:{maker}:{taker}" for code, maker, taker in value)
    if setting == "day_ahead_gate_ms":
        if value is None:
            return ""
        seconds = value // 1000
        hours, minutes, seconds = seconds // 3600, seconds // 60 % 60, seconds % 60
        return f"{hours:02d}:{minutes:02d}" + (f":{seconds:02d}" if seconds else "")
    if setting == "intraday_every_ms":
        return "0" if value is None else str(value // HOUR_MS)
    if setting == "listed_families":
        return ",".join(value)
    if setting in ("listing_days", "term_days"):
        horizons = set(value.values())
        return str(horizons.pop()) if len(horizons) == 1 else None
    if setting in ("band", "protection", "bond_bps", "recall_compensation_bps"):
        return str(value)
    return None


def rules_differ_message(changes: Sequence[RuleChange]) -> str:
    """What differs from the rules recorded with the history, setting by setting, and how to
    go on: Chinese first, then English."""
    lines = [
        "此历史是按另一套市场规则记录的 this history was recorded under other market rules "
        "than those set now:"
    ]
    restore = []
    for change in changes:
        env, meaning = RULE_SETTINGS.get(change.setting, (None, change.setting))
        recorded = _rule_env_value(change.setting, change.recorded)
        now = _rule_env_value(change.setting, change.now)
        shown_recorded = _rule_shown(recorded, change.recorded)
        shown_now = _rule_shown(now, change.now)
        name = env or f"{change.setting} (无环境变量, 由版本决定 set by the release, no variable)"
        lines.append(
            f"  {name} ({meaning}): 记录的 recorded {shown_recorded}, 现在 now {shown_now}"
        )
        if env is not None and recorded is not None:
            restore.append(f"{env}={recorded!r}" if recorded == "" else f"{env}={recorded}")
    if restore:
        lines.append(
            "继续此历史: 以记录的规则运行 to go on with this history, run with the recorded "
            f"rules: {' '.join(restore)}"
        )
    lines.append(
        "使用新规则: 开始新的历史 to use the new rules, start a new history: an empty "
        "CX_DATA_DIR (with Kafka and PostgreSQL, a new CX_TOPIC_PREFIX and an empty database). "
        "在已有历史中改变规则尚不支持 changing the rules within a history is not supported yet "
        '(docs/DESIGN.md, "Market rules are part of the history")'
    )
    return "\n".join(lines)


def _rule_shown(env_value: str | None, value: Any) -> str:
    if env_value is None:
        return "无 none" if value in (None, {}, []) else json.dumps(value, ensure_ascii=False)
    return env_value if env_value else "空 empty"
