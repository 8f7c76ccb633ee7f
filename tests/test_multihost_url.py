"""A DATABASE_URL naming a primary and its standby reaches asyncpg as asyncpg spells it."""

from __future__ import annotations

from sqlalchemy import make_url

from settlement.scratch import asyncpg_dsn

MULTI_HOST = (
    "postgresql+asyncpg://exchange:exchange@/exchange"
    "?host=127.0.0.1:55533&host=127.0.0.1:55534&target_session_attrs=read-write"
)


def test_several_servers_become_a_host_list_with_the_options_kept() -> None:
    assert asyncpg_dsn(make_url(MULTI_HOST)) == (
        "postgresql://exchange:exchange@127.0.0.1:55533,127.0.0.1:55534/exchange"
        "?target_session_attrs=read-write"
    )


def test_another_database_on_the_same_servers() -> None:
    assert asyncpg_dsn(make_url(MULTI_HOST).set(database="scratch_1")) == (
        "postgresql://exchange:exchange@127.0.0.1:55533,127.0.0.1:55534/scratch_1"
        "?target_session_attrs=read-write"
    )


def test_one_server_is_left_as_it_is() -> None:
    url = make_url("postgresql+asyncpg://exchange:exchange@127.0.0.1:55432/exchange")
    assert asyncpg_dsn(url) == "postgresql://exchange:exchange@127.0.0.1:55432/exchange"
