"""The results store: every attempt of every run, as it moves (SQLAlchemy 2 Core).

    store = Store.open()                          # KITEBENCH_STORE, else the user's SQLite file
    store = Store.open("postgresql://kb@db/kb")   # a team's store

The URL is any SQLAlchemy URL; ``postgresql://`` uses psycopg 3. Opening a store brings its schema
to the newest Alembic revision. Writes are short transactions, so several writers (two matrix
runs, a submit) can share one store: SQLite runs in WAL mode with ``BEGIN IMMEDIATE`` and a busy
timeout, PostgreSQL serialises only the schema migration (an advisory lock).
"""

from __future__ import annotations

import datetime as _dt
import os
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, insert, select, text, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from launcher.campaign.schema import attempts, runs
from launcher.errors import InfraError, UsageError

ENV_VAR = "KITEBENCH_STORE"
_MIGRATIONS = Path(__file__).with_name("migrations")
#: PostgreSQL advisory lock key of the schema migration ("kbst" in ASCII).
_MIGRATE_LOCK = 0x6B627374
_SQLITE_BUSY_MS = 30_000

#: The attempt fields the JSON outputs carry (result_json only on request: it is big).
ATTEMPT_FIELDS = [c.name for c in attempts.columns if c.name != "result_json"]


def now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_url(env: dict[str, str] | None = None) -> str:
    """``$KITEBENCH_STORE``, else ``sqlite:///`` a file in the user's data dir."""
    env = dict(os.environ) if env is None else env
    if env.get(ENV_VAR):
        return env[ENV_VAR]
    base = Path(env.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return f"sqlite:///{base / 'kitebench' / 'store.db'}"


def mask(url: str | URL) -> str:
    """The URL with its password hidden: the only form of a store URL kitebench prints."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable store URL>"


def _parse(url: str) -> URL:
    try:
        u = make_url(url)
    except ArgumentError:
        raise UsageError(f"store URL {mask(url)!r} is not a database URL "
                         "(e.g. sqlite:///ABSOLUTE/PATH.db or postgresql://USER@HOST/DB)") from None
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")  # psycopg 3, not the psycopg2 default
    return u


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.url = mask(engine.url)

    @classmethod
    def open(cls, url: str | None = None, *, migrate: bool = True) -> Store:
        raw = url or default_url()
        u = _parse(raw)
        try:
            if u.get_backend_name() == "sqlite":
                engine = _sqlite_engine(u)
            else:
                engine = create_engine(u, pool_pre_ping=True)
        except NoSuchModuleError:
            raise UsageError(f"store URL {mask(u)}: unsupported database "
                             f"{u.get_backend_name()!r} (use sqlite or postgresql)") from None
        except ImportError as e:
            raise UsageError(f"store URL {mask(u)}: driver missing ({e.name})") from None
        store = cls(engine)
        if migrate:
            store.migrate()
        return store

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ----------------------------------------------------------------------------

    def migrate(self) -> None:
        """Upgrade the schema to the newest revision (a no-op when it is there)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        with self._begin() as conn:
            if conn.dialect.name == "postgresql":
                # two processes opening a fresh store at once: one migrates, the other waits
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATE_LOCK})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def revision(self) -> str | None:
        from alembic.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    # -- writes ----------------------------------------------------------------------------

    def create_run(self, *, name: str, kind: str, backend: str, cells: int = 0,
                   matrix_json: str | None = None, run_id: str | None = None) -> str:
        rid = run_id or uuid.uuid4().hex[:12]
        with self._begin() as conn:
            conn.execute(insert(runs).values(
                id=rid, name=name, kind=kind, backend=backend, status="running", cells=cells,
                matrix_json=matrix_json, created_at=now()))
        return rid

    def update_run(self, run_id: str, **values: Any) -> None:
        with self._begin() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id).values(**values))

    def add_attempt(self, **values: Any) -> int:
        values.setdefault("created_at", now())
        values.setdefault("status", "pending")
        with self._begin() as conn:
            res = conn.execute(insert(attempts).values(**values).returning(attempts.c.id))
            return int(res.scalar_one())

    def add_attempts(self, rows: list[dict[str, Any]]) -> None:
        """Many rows in one transaction (benchmarks, imports)."""
        stamp = now()
        for r in rows:
            r.setdefault("created_at", stamp)
            r.setdefault("status", "pending")
        with self._begin() as conn:
            conn.execute(insert(attempts), rows)

    def update_attempt(self, attempt_id: int, **values: Any) -> None:
        with self._begin() as conn:
            conn.execute(update(attempts).where(attempts.c.id == attempt_id).values(**values))

    # -- reads -----------------------------------------------------------------------------

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self._connect() as conn:
            row = conn.execute(select(runs).where(runs.c.id == run_id)).mappings().first()
            return dict(row) if row else None

    def list_runs(self, limit: int = 50) -> list[dict[str, Any]]:
        with self._connect() as conn:
            q = select(runs).order_by(runs.c.created_at.desc()).limit(limit)
            return [dict(r) for r in conn.execute(q).mappings()]

    def attempts(self, *, run_id: str | None = None, task: str | None = None,
                 status: str | None = None, with_result: bool = False) -> list[dict[str, Any]]:
        cols = list(attempts.columns) if with_result else \
            [attempts.c[n] for n in ATTEMPT_FIELDS]
        q = select(*cols).order_by(attempts.c.id)
        if run_id is not None:
            q = q.where(attempts.c.run_id == run_id)
        if task is not None:
            q = q.where(attempts.c.task == task)
        if status is not None:
            q = q.where(attempts.c.status == status)
        with self._connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def count_attempts(self) -> int:
        with self._connect() as conn:
            return int(conn.execute(select(func.count()).select_from(attempts)).scalar_one())

    # -- plumbing --------------------------------------------------------------------------

    def _begin(self) -> Any:
        return _Guard(self, self.engine.begin)

    def _connect(self) -> Any:
        return _Guard(self, self.engine.connect)


class _Guard:
    """A connection context whose database errors become one readable InfraError line (with the
    URL masked: a driver's message can quote the URL it was given)."""

    def __init__(self, store: Store, opener: Any) -> None:
        self.store = store
        self.opener = opener
        self.cm: Any = None

    def __enter__(self) -> Any:
        try:
            self.cm = self.opener()
            return self.cm.__enter__()
        except SQLAlchemyError as e:
            raise self._error(e) from None

    def __exit__(self, et: Any, ev: Any, tb: Any) -> bool:
        try:
            self.cm.__exit__(et, ev, tb)
        except SQLAlchemyError as e:
            raise self._error(e) from None
        if isinstance(ev, SQLAlchemyError):
            raise self._error(ev) from None
        return False

    def _error(self, e: SQLAlchemyError) -> InfraError:
        msg = str(getattr(e, "orig", None) or e).strip().splitlines()[0] if str(e) else type(e).__name__
        pw = make_url(self.store.engine.url).password
        if pw:
            msg = msg.replace(str(pw), "***")
        return InfraError(f"results store {self.store.url}: {msg}")


def _sqlite_engine(u: URL) -> Engine:
    db = u.database
    if db and db != ":memory:":
        try:
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"store {mask(u)}: cannot create its directory: {e.strerror}") from None
    engine = create_engine(u, connect_args={"timeout": _SQLITE_BUSY_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
        # pysqlite's own transaction handling defers BEGIN; take control (SQLAlchemy's recipe)
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        cur.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # take the write lock at BEGIN: two writers queue on the busy timeout instead of one
        # failing with "database is locked" when its read turns into a write
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
