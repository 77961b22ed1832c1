"""Provisioning as code: apply a declarative YAML file of accounts, tariffs, peers and routes.

``provision(engine, path)`` makes the database say what the file says, in one transaction:

* Entities are matched by name (routes by prefix) and created or updated; nothing that the file
  does not mention is deleted.  A tariff's rate list and a route's supplier list are replaced
  whole by the file's.  Optional fields left out of the file take their defaults (the file
  describes an entity completely), except an account's ``balance``, which is the *opening*
  balance, used only when the account is created: afterwards balances move only through CDRs
  and top-ups, recorded in ``balance_changes``.
* A password left out keeps the stored one (as in the UI and the API).
* The whole file is validated before anything is written, and any error raises
  :class:`ProvisioningError` naming the file, line and field
  (``provision.yaml:12: peers[0].tariff: unknown tariff 'retial'``) with the database
  unchanged.  Line numbers come from PyYAML's node marks: the file is *composed* (parsed to
  nodes) rather than loaded, and numbers are read from their source text, never through float.
* When anything changed, ``config_version`` is bumped in the same transaction so every node
  reloads its in-memory views; a run that changes nothing leaves the version alone.

The readers (:mod:`.readers`, through the YAML adapter :mod:`.yaml_source`), the rules and
the upserts (:mod:`.writer`) are the ones the REST API and the web UI use; this module only
opens the file and applies what it says.  The format is documented in
``docs/provisioning.md``; ``examples/provision.yaml`` is a working example.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from smartswitch.admin import readers
from smartswitch.admin.audit_log import Who
from smartswitch.admin.operations import Admin
from smartswitch.admin.writer import ChangeReport, ConfigChange, ConfigInvalid, Issue
from smartswitch.admin.yaml_source import read_yaml
from smartswitch.store.database import session_factory

ACTOR = "provision"  # who the audit log names for a provisioning file

__all__ = ["Issue", "ProvisionReport", "ProvisioningError", "provision", "provision_text"]

# The names this module has always exported: the writer's, under provisioning's words.
ProvisioningError = ConfigInvalid
ProvisionReport = ChangeReport


def parse_document(text: str, file: str) -> ConfigChange:
    """Read ``text`` on its own (no database): every field checked, every bad one reported in
    a :class:`ProvisioningError`. The rules between fields and entities are the writer's."""
    return read_yaml(text, file, partial(readers.document, file=file))


async def provision_text(
    engine: AsyncEngine,
    text: str,
    file: str = "<text>",
    *,
    dry_run: bool = False,
    realm: str = "smartswitch",
) -> ProvisionReport:
    """:func:`provision` for a document already in memory (tests, a caller with the text).

    ``realm`` is the digest realm subscribers' passwords are hashed for: the node's
    ``sip_realm``."""
    change = parse_document(text, file)
    admin = Admin(session_factory(engine), realm=realm, who=Who(ACTOR, f"provision {file}"))
    return await admin.apply(change, dry_run=dry_run)


async def provision(
    engine: AsyncEngine, path: Path, *, dry_run: bool = False, realm: str = "smartswitch"
) -> ProvisionReport:
    """Apply the provisioning file at ``path`` (see the module docstring).

    Raises :class:`ProvisioningError` (database unchanged) if the file cannot be read or is
    invalid.  With ``dry_run`` everything is validated and applied inside the transaction,
    which is then rolled back: the report says what would change.
    """
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProvisioningError([Issue(file, None, "", f"cannot read the file: {exc}")]) from None
    return await provision_text(engine, text, file, dry_run=dry_run, realm=realm)
