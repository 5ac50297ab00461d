"""What the sweep's SQL storage needs beyond Optuna's defaults: SQLite transactions that lock
when they begin, and the storage URL as ``sweep.json`` records it (without its password)."""

from __future__ import annotations


def lock_on_begin(engine) -> None:
    """Make every SQLite transaction take the database's write lock when it begins.

    Optuna claims a waiting trial (a retry) by reading its state and writing RUNNING in one
    transaction, with ``SELECT ... FOR UPDATE``; SQLite ignores FOR UPDATE and Python's sqlite3
    begins a transaction only at the first write, so two workers could both read WAITING and
    both run the retry (measured: 3 processes popping 60 queued trials took 72-78; the SmolLM2
    sweep ran one retry twice and lost a worker to "Cannot tell a COMPLETE trial"). With
    ``BEGIN IMMEDIATE`` the read and the write are one locked step (SQLAlchemy's recipe for
    pysqlite). PostgreSQL and MySQL honour FOR UPDATE and need nothing."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _driver_leaves_transactions_to_us(dbapi_connection, record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened while Optuna set the storage up predate the hooks


def shown_url(url: str | None) -> str:
    """The storage as sweep.json records it: "default", or the URL without its password."""
    if url is None:
        return "default"
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: RDBStorage will say so
        return url
