"""The database fixtures of the store tests (SQLite, and MariaDB when one can be started)."""

from store.conftest import db_url, mariadb_address, mariadb_url  # noqa: F401
