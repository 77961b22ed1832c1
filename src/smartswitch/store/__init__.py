"""Persistence: one schema on SQLite (embedded) and MariaDB (cluster), never on the call path.

- ``schema``: the tables (SQLAlchemy 2 declarative); ``types``: exact money and UTC times.
- ``migrations/`` + ``migrate``: Alembic revisions shipped in the package; ``upgrade(url)``.
- ``database``: URLs, engines (SQLite pragmas, MariaDB pool), session factory.
- ``snapshot``: the configuration the call path reads, and the version that triggers reloads.
- ``ledger``: CDRs and the money they move, in batches, idempotently; top-ups and adjustments.
- ``outbox`` + ``forwarder``: the node's durable queue of finished calls, drained into the
  money database; in a cluster kept until seen in the node's own replica, re-sent when the
  epoch moves on.
- ``cluster_state``: who the primary is (the epoch) and the history of promotions.
- ``values``: ACL and address text.

The values stored here are :mod:`smartswitch.model`'s; the operator's reads and writes are
:mod:`smartswitch.admin`'s.
"""
