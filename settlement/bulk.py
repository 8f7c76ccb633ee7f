"""Writing a batch of rows with one statement per table, whatever the batch's size.

On PostgreSQL each column of the batch is bound as one array and the statement reads the rows
from `unnest(...)`: one round trip, one plan and one execution per table, where `executemany`
executes the statement once per row (settlement's profile at saturation was a dozen such
statements a batch, in SQLAlchemy's per-row parameter handling, in PostgreSQL's per-row
executions and in socket writes). SQLite runs in process, so there the statement runs per row
(`executemany`), as before.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from operator import itemgetter
from typing import Any, Literal, cast

import asyncpg
from sqlalchemy import (
    ARRAY,
    ClauseElement,
    ColumnElement,
    CursorResult,
    Executable,
    Table,
    bindparam,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import TypeEngine

Rows = Mapping[str, ColumnElement[Any]]
"""The columns of the batch's rows, by name, to build a statement on."""

OnConflict = Literal["update", "nothing"] | None


def _unnest(columns: Mapping[str, TypeEngine[Any]]) -> Rows:
    # SQLAlchemy reserves bound parameters named after the table's columns in INSERT and UPDATE.
    arrays = [bindparam(f"all_{name}", type_=ARRAY(kind)) for name, kind in columns.items()]
    return dict(func.unnest(*arrays).table_valued(*columns).render_derived().c.items())


def _as_columns(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, list[Any]]:
    return {f"all_{name}": [row[name] for row in rows] for name in names}


class _DriverStatement:
    """A statement compiled once into PostgreSQL's own words and run straight on asyncpg (its
    prepared statement cache), inside the SQLAlchemy connection's transaction: at the small
    batches of a settlement that keeps up, SQLAlchemy's execution of each statement cost more
    of its CPU than the driver's. Its bound values are processed as SQLAlchemy would."""

    def __init__(self, statement: Executable, dialect: Dialect) -> None:
        self.statement = statement
        compiled = cast(SQLCompiler, cast(ClauseElement, statement).compile(dialect=dialect))
        self.sql = compiled.string
        self._fixed = compiled.params
        """The values the statement binds itself (literals SQLAlchemy binds as parameters)."""
        self._params = [
            (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in compiled.positiontup or ()
        ]

    async def execute(self, connection: AsyncConnection, values: Mapping[str, Any]) -> None:
        """Run with `values` (by bound parameter name); through SQLAlchemy when the connection
        has not begun its transaction, which SQLAlchemy then begins."""
        raw = await connection.get_raw_connection()
        driver: asyncpg.Connection = raw.driver_connection
        if not driver.is_in_transaction():
            await connection.execute(self.statement, values)
            return
        bound = {**self._fixed, **values}
        args = [
            bound[name] if process is None else process(bound[name])
            for name, process in self._params
        ]
        async with driven(connection, self.sql) as same:
            await same.execute(self.sql, *args)


class BatchInsert:
    """INSERT of a batch of rows into a table, with an optional ON CONFLICT on its key."""

    def __init__(
        self,
        table: Table,
        *,
        on_conflict: OnConflict = None,
        returning: Sequence[ColumnElement[Any]] = (),
    ) -> None:
        self._table = table
        self._names = [column.name for column in table.columns if column.server_default is None]
        self._on_conflict = on_conflict
        self._returning = tuple(returning)
        self._statements: dict[str, Executable] = {}
        self._driver_statement: _DriverStatement | None = None

    def _statement(self, dialect: str) -> Executable:
        statement = self._statements.get(dialect)
        if statement is None:
            statement = self._build(dialect)
            self._statements[dialect] = statement
        return statement

    def _build(self, dialect: str) -> Executable:
        insert: postgresql.Insert | sqlite.Insert
        if dialect == "postgresql":
            rows = _unnest({name: self._table.c[name].type for name in self._names})
            insert = postgresql.insert(self._table).from_select(
                self._names, select(*(rows[name] for name in self._names))
            )
        else:
            insert = sqlite.insert(self._table)
        keys = [column.name for column in self._table.primary_key]
        if self._on_conflict == "update":
            insert = insert.on_conflict_do_update(
                index_elements=keys,
                set_={name: insert.excluded[name] for name in self._names if name not in keys},
            )
        elif self._on_conflict == "nothing":
            insert = insert.on_conflict_do_nothing()
        if self._returning:
            return insert.returning(*self._returning)
        return insert

    async def execute(
        self, connection: AsyncConnection, rows: Sequence[Mapping[str, Any]]
    ) -> CursorResult[Any] | None:
        """Insert `rows` (dicts by column name; the columns with server defaults left out);
        the result of a statement RETURNING rows, else None on PostgreSQL.

        An upsert must not name one key twice in a batch: PostgreSQL refuses to update a row
        twice in one statement. Rows are inserted in the order given."""
        dialect = connection.dialect.name
        if dialect == "postgresql":
            columns = _as_columns(rows, self._names)
            if not self._returning:
                if self._driver_statement is None:
                    self._driver_statement = _DriverStatement(
                        self._statement(dialect), connection.dialect
                    )
                await self._driver_statement.execute(connection, columns)
                return None
            return await connection.execute(self._statement(dialect), columns)
        return await connection.execute(self._statement(dialect), list(rows))


@asynccontextmanager
async def driven(connection: AsyncConnection, statement: str) -> AsyncIterator[asyncpg.Connection]:
    """The asyncpg connection under a PostgreSQL connection, in its transaction if it has begun
    one, for what SQLAlchemy does not do (COPY). Its errors are raised as SQLAlchemy raises
    the driver's (a duplicate key an IntegrityError, a lost connection a DBAPIError flagged
    invalidated), naming `statement`, so callers tell failures apart as they did."""
    raw = await connection.get_raw_connection()
    try:
        yield raw.driver_connection
    except Exception as error:
        adapted: Any = raw.dbapi_connection
        dialect = connection.dialect
        dbapi_error = dialect.loaded_dbapi.Error
        try:
            adapted._handle_exception(error)  # raises the dialect's DBAPI error for the driver's
        except dbapi_error as translated:
            raise DBAPIError.instance(
                statement,
                None,
                translated,
                dbapi_error,
                connection_invalidated=dialect.is_disconnect(translated, adapted, None),
                dialect=dialect,
            ) from error
        raise


class BatchAppend:
    """Rows appended to a table that is only ever inserted into, with no conflict to handle.

    On PostgreSQL the rows go in by COPY (binary), which costs both sides less than an INSERT
    reading arrays: 0.64 against 1.21 µs of the client's CPU a journal row and 1.63 against
    1.87 µs of the server's, measured alone. A duplicate key fails the COPY as it would the
    INSERT. SQLite inserts row by row, as `BatchInsert` does.
    """

    def __init__(self, table: Table) -> None:
        self._table = table
        self._names = [column.name for column in table.columns if column.server_default is None]
        self._row = itemgetter(*self._names)
        self._copy = f"COPY {table.name} ({', '.join(self._names)}) FROM STDIN"
        """The statement, as errors name it."""
        self._insert = sqlite.insert(table)

    async def execute(self, connection: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append `rows` (dicts by column name; the columns with server defaults left out)."""
        if not rows:
            return
        if connection.dialect.name == "postgresql":
            async with driven(connection, self._copy) as driver:
                await driver.copy_records_to_table(
                    self._table.name, records=map(self._row, rows), columns=self._names
                )
            return
        await connection.execute(self._insert, list(rows))


class BatchUpdate:
    """An UPDATE applied once per row of a batch, each row naming the row it changes.

    `build` makes the statement from the batch's columns (`Rows`): on PostgreSQL they are the
    columns of `unnest(...)` (UPDATE ... FROM), on SQLite bound parameters of one row. A batch
    must name each target row once: UPDATE ... FROM applies one source row per target row.
    """

    def __init__(
        self, columns: Mapping[str, TypeEngine[Any]], build: Callable[[Rows], Executable]
    ) -> None:
        self._columns = dict(columns)
        self._build = build
        self._statements: dict[str, Executable] = {}
        self._driver_statement: _DriverStatement | None = None

    def _statement(self, dialect: str) -> Executable:
        statement = self._statements.get(dialect)
        if statement is None:
            if dialect == "postgresql":
                statement = self._build(_unnest(self._columns))
            else:
                row = {n: bindparam(f"row_{n}", type_=t) for n, t in self._columns.items()}
                statement = self._build(row)
            self._statements[dialect] = statement
        return statement

    async def execute(self, connection: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Apply the update for every row (dicts by the names in `columns`)."""
        if not rows:
            return
        dialect = connection.dialect.name
        if dialect == "postgresql":
            columns = _as_columns(rows, list(self._columns))
            if self._driver_statement is None:
                self._driver_statement = _DriverStatement(
                    self._statement(dialect), connection.dialect
                )
            await self._driver_statement.execute(connection, columns)
            return
        await connection.execute(
            self._statement(dialect),
            [{f"row_{name}": value for name, value in row.items()} for row in rows],
        )
