"""Persistence: one schema on SQLite (embedded) and MariaDB (cluster), never on the call path.

- ``schema``: the tables (SQLAlchemy 2 declarative); ``types``: exact money and UTC times.
- ``migrations/`` + ``migrate``: Alembic revisions shipped in the package; ``upgrade(url)``.
- ``database``: URLs, engines (SQLite pragmas, MariaDB pool), session factory.
- ``snapshot``: the configuration the call path reads, and the version that triggers reloads.
- ``cdr_writer``: CDRs and money movements, in batches, idempotently; top-ups.
- ``commands``: operator commands (CDR export, account list).
- ``ids``: ULIDs; ``values``: ACL and address text.

Provisioning from YAML is :mod:`smartswitch.provisioning`.
"""
