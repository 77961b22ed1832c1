"""The database schema: one set of tables for SQLite (embedded) and MariaDB (the cluster).

The ORM classes are named ``...Row`` so they never get mixed up with the frozen values of
:mod:`smartswitch.model.config` that the call path reads (``store.snapshot`` builds those).

Two families of tables with different rules:

* **Configuration** (accounts, tariffs, rates, peers, routes, route_suppliers, settings) is
  written only on the primary, in transactions that also bump ``config_version``; it uses
  foreign keys.
* **History and money** (cdrs, cdr_attempts, balance_changes) is written by every node through
  the outbox, possibly long after the call (when the primary comes back).  Those rows refer to
  peers and accounts by id *without* foreign keys: a delivery must never be refused because the
  configuration changed meanwhile (a CDR is a fact about the past), and a refused delivery
  would block the outbox.  Accounts and peers that have history are disabled, not deleted.

Every money column is :class:`~smartswitch.store.types.Money` (exact on both databases) and
every time is :class:`~smartswitch.store.types.UtcDateTime`.  Change this module only together
with a new Alembic revision in ``migrations/versions`` (``tests/store`` checks they agree).
"""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from smartswitch.model.cdr import HangupSide
from smartswitch.model.config import PeerRole, ProfitControl, RouteStrategy
from smartswitch.store.types import AMOUNT_SCALE, PRICE_SCALE, Money, UtcDateTime

__all__ = [
    "AccountRow",
    "ApiTokenRow",
    "BalanceChangeKind",
    "BalanceChangeRow",
    "Base",
    "CdrAttemptRow",
    "CdrRow",
    "ClusterStateRow",
    "ConfigAuditRow",
    "ConfigVersionRow",
    "DidRow",
    "HangupSide",
    "PeerRow",
    "PromotionRow",
    "RateRow",
    "RegistrationRow",
    "RouteRow",
    "RouteSupplierRow",
    "SettingRow",
    "SubscriberRow",
    "TariffRow",
    "UserRole",
    "UserRow",
]

# Deterministic constraint names: later migrations must be able to name what they drop, and
# MariaDB and SQLite would otherwise invent different names.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# utf8mb4_bin makes names case- and accent-sensitive on MariaDB as they are on SQLite, so
# "Acme" and "acme" are the same account on neither database.
MYSQL_TABLE_ARGS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}

NAME_LENGTH = 64
PREFIX_LENGTH = 32
ID_LENGTH = 40  # ULIDs are 26 characters; balance change ids add a suffix


class BalanceChangeKind(enum.StrEnum):
    TOPUP = "topup"
    ADJUSTMENT = "adjustment"
    CDR = "cdr"


def _enum(cls: type[enum.Enum]) -> Enum:
    # Stored as VARCHAR holding the enum *value* ("least_cost"), not a native ENUM: adding a
    # member later then needs no ALTER TABLE on MariaDB, and SQLite has no ENUM anyway.
    return Enum(
        cls,
        native_enum=False,
        create_constraint=False,
        length=16,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class AccountRow(Base):
    """Who pays or is paid.  ``balance`` moves only through balance_changes (see ledger)."""

    __tablename__ = "accounts"
    __table_args__ = (MYSQL_TABLE_ARGS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    currency: Mapped[str] = mapped_column(String(3))
    balance: Mapped[Decimal] = mapped_column(Money(AMOUNT_SCALE))
    credit_limit: Mapped[Decimal] = mapped_column(Money(AMOUNT_SCALE))
    prepaid: Mapped[bool] = mapped_column(Boolean)
    # Seconds granted to a call at a time; NULL: the node's reserve_seconds.
    reserve_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    # Its relayed calls are recorded whatever their peers say.
    media_record: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class TariffRow(Base):
    __tablename__ = "tariffs"
    __table_args__ = (MYSQL_TABLE_ARGS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    currency: Mapped[str] = mapped_column(String(3))

    # lazy="raise": with asyncio an implicit lazy load would fail anyway; say so loudly.
    rates: Mapped[list[RateRow]] = relationship(
        back_populates="tariff",
        cascade="all, delete-orphan",
        order_by="RateRow.prefix",
        lazy="raise",
    )


class RateRow(Base):
    """One price line of a tariff; the call path picks the longest matching prefix."""

    __tablename__ = "rates"
    __table_args__ = (Index(None, "tariff_id", "prefix"), MYSQL_TABLE_ARGS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tariff_id: Mapped[int] = mapped_column(ForeignKey("tariffs.id", ondelete="CASCADE"))
    prefix: Mapped[str] = mapped_column(String(PREFIX_LENGTH))
    price_per_minute: Mapped[Decimal] = mapped_column(Money(PRICE_SCALE))
    connect_fee: Mapped[Decimal] = mapped_column(Money(PRICE_SCALE))
    increment_min: Mapped[int] = mapped_column(Integer)
    increment_step: Mapped[int] = mapped_column(Integer)
    free_seconds: Mapped[int] = mapped_column(Integer)
    effective_from: Mapped[datetime | None] = mapped_column(UtcDateTime())
    effective_to: Mapped[datetime | None] = mapped_column(UtcDateTime())

    tariff: Mapped[TariffRow] = relationship(back_populates="rates", lazy="raise")


class PeerRow(Base):
    """A trunk: a customer sending us calls, a supplier we send calls to, or both.

    ``password`` is the digest secret, stored as given (plain text) for now: digest auth needs
    either the secret or HA1 per realm, and the realm is not settled yet.  Restrict access to
    the database accordingly.
    """

    __tablename__ = "peers"
    __table_args__ = (MYSQL_TABLE_ARGS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    role: Mapped[PeerRole] = mapped_column(_enum(PeerRole))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    tariff_id: Mapped[int | None] = mapped_column(ForeignKey("tariffs.id"), index=True)
    # A JSON list of strings: "CIDR", "CIDR:port" or "[v6]/len:port".
    acl: Mapped[list[str]] = mapped_column(JSON)
    # Unique because digest authentication looks the peer up by username.
    username: Mapped[str | None] = mapped_column(String(NAME_LENGTH), unique=True)
    password: Mapped[str | None] = mapped_column(String(128))
    address: Mapped[str | None] = mapped_column(String(255))
    transport: Mapped[str] = mapped_column(String(8))
    max_calls: Mapped[int | None] = mapped_column(Integer)
    max_cps: Mapped[int | None] = mapped_column(Integer)
    # JSON lists of {"match": regex, "replace": template}.
    caller_rewrite: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    callee_rewrite: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    profit_control: Mapped[ProfitControl] = mapped_column(_enum(ProfitControl))
    enabled: Mapped[bool] = mapped_column(Boolean)
    # Registrar (revision 0002). deliver_dids: INVITEs from this peer (recognised by its ACL)
    # to one of our DIDs go to the DID's owner. register_*: the switch registers with this
    # supplier; the password is kept as given, since answering its challenge needs it.
    deliver_dids: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    register_username: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    register_password: Mapped[str | None] = mapped_column(String(128))
    register_registrar: Mapped[str | None] = mapped_column(String(255))
    register_expires: Mapped[int | None] = mapped_column(Integer)
    # Nodes (revision 0007). nodes: the names of the nodes the peer is attached to, a JSON
    # list (empty: every node). register_nodes: a registering supplier's per-node accounts, a
    # JSON list of {"node", "username", "password"} (kept as given, like register_password).
    nodes: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    register_nodes: Mapped[list[dict[str, str]]] = mapped_column(
        JSON, default=list, server_default="[]"
    )
    # Mutual TLS (revision 0009): the SHA-256 fingerprint ("AB:CD:...") of the client
    # certificate the peer presents; set, it identifies the peer, and is required of it.
    tls_fingerprint: Mapped[str | None] = mapped_column(String(95), default=None)
    # Media (revision 0010): "direct" or "relay"; the codecs allowed (a JSON list of
    # names, empty: any); its relayed calls recorded; direct media when no relay is up.
    media_mode: Mapped[str] = mapped_column(String(8), default="direct", server_default="direct")
    media_codecs: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    media_record: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    media_fallback: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class RouteRow(Base):
    """Where calls to numbers starting with ``prefix`` go ("" is the default route)."""

    __tablename__ = "routes"
    __table_args__ = (MYSQL_TABLE_ARGS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prefix: Mapped[str] = mapped_column(String(PREFIX_LENGTH), unique=True)
    strategy: Mapped[RouteStrategy] = mapped_column(_enum(RouteStrategy))
    name: Mapped[str | None] = mapped_column(String(NAME_LENGTH))

    suppliers: Mapped[list[RouteSupplierRow]] = relationship(
        back_populates="route",
        cascade="all, delete-orphan",
        order_by="RouteSupplierRow.position",
        lazy="raise",
    )


class RouteSupplierRow(Base):
    """A supplier of a route.  ``position`` is its place in the list as written ("order" is a
    reserved word in SQL); ``priority`` and ``weight`` drive the route's strategy."""

    __tablename__ = "route_suppliers"
    __table_args__ = (UniqueConstraint("route_id", "peer_id"), MYSQL_TABLE_ARGS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    route_id: Mapped[int] = mapped_column(ForeignKey("routes.id", ondelete="CASCADE"))
    peer_id: Mapped[int] = mapped_column(ForeignKey("peers.id"), index=True)
    priority: Mapped[int] = mapped_column(Integer)
    weight: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer)

    route: Mapped[RouteRow] = relationship(back_populates="suppliers", lazy="raise")


class CdrRow(Base):
    """A finished call, rated.  ``id`` is a ULID made by the node (see ``store.ids``)."""

    __tablename__ = "cdrs"
    __table_args__ = (
        Index(None, "customer_account_id", "setup_time"),
        Index(None, "setup_time"),
        MYSQL_TABLE_ARGS,
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    call_id: Mapped[str] = mapped_column(String(255), index=True)  # the A leg's Call-ID
    node: Mapped[str] = mapped_column(String(NAME_LENGTH))
    customer_peer_id: Mapped[int] = mapped_column(Integer)
    customer_account_id: Mapped[int] = mapped_column(Integer)
    caller: Mapped[str] = mapped_column(String(128))  # as received from the customer
    callee: Mapped[str] = mapped_column(String(128))
    caller_out: Mapped[str] = mapped_column(String(128))  # as sent to the supplier
    callee_out: Mapped[str] = mapped_column(String(128))
    setup_time: Mapped[datetime] = mapped_column(UtcDateTime())
    answer_time: Mapped[datetime | None] = mapped_column(UtcDateTime())
    end_time: Mapped[datetime] = mapped_column(UtcDateTime())
    duration_ms: Mapped[int] = mapped_column(Integer)
    billed_seconds: Mapped[int] = mapped_column(Integer)
    price: Mapped[Decimal] = mapped_column(Money(AMOUNT_SCALE))
    cost: Mapped[Decimal] = mapped_column(Money(AMOUNT_SCALE))
    profit: Mapped[Decimal] = mapped_column(Money(AMOUNT_SCALE))
    currency: Mapped[str] = mapped_column(String(3))
    supplier_peer_id: Mapped[int | None] = mapped_column(Integer)  # the one that answered
    supplier_account_id: Mapped[int | None] = mapped_column(Integer)
    sip_code: Mapped[int] = mapped_column(Integer)
    sip_reason: Mapped[str] = mapped_column(String(255))
    hangup_side: Mapped[HangupSide] = mapped_column(_enum(HangupSide))
    hangup_reason: Mapped[str] = mapped_column(String(255))
    # Revision 0002: the subscriber of the call (calling out, or taking a DID call), if any.
    subscriber_id: Mapped[int | None] = mapped_column(Integer)


class CdrAttemptRow(Base):
    """One supplier tried for a call, in order (``seq`` from 1)."""

    __tablename__ = "cdr_attempts"
    __table_args__ = (MYSQL_TABLE_ARGS,)

    cdr_id: Mapped[str] = mapped_column(ForeignKey("cdrs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    supplier_peer_id: Mapped[int] = mapped_column(Integer)
    sip_code: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(255))
    start_time: Mapped[datetime] = mapped_column(UtcDateTime())
    end_time: Mapped[datetime] = mapped_column(UtcDateTime())


class BalanceChangeRow(Base):
    """The audit trail of money: every change of an account's balance, signed.

    For every account, balance = opening balance + SUM(amount) of its changes.  Ids are unique
    strings so that a change delivered twice by the outbox is recognised (CDR charges use the
    CDR id plus ":c" for the customer and ":s" for the supplier).
    """

    __tablename__ = "balance_changes"
    __table_args__ = (Index(None, "account_id", "created_at"), MYSQL_TABLE_ARGS)

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    account_id: Mapped[int] = mapped_column(Integer)
    amount: Mapped[Decimal] = mapped_column(Money(AMOUNT_SCALE))
    kind: Mapped[BalanceChangeKind] = mapped_column(_enum(BalanceChangeKind))
    reference: Mapped[str | None] = mapped_column(String(ID_LENGTH), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    actor: Mapped[str] = mapped_column(String(NAME_LENGTH))
    note: Mapped[str | None] = mapped_column(Text)


class SettingRow(Base):
    """Global settings as text ("key" is a reserved word in MariaDB, hence ``name``)."""

    __tablename__ = "settings"
    __table_args__ = (MYSQL_TABLE_ARGS,)

    name: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class ConfigVersionRow(Base):
    """A single row (id 1) whose ``version`` is bumped by every configuration change, in the
    same transaction; nodes poll it and reload their in-memory views when it moves."""

    __tablename__ = "config_version"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"), MYSQL_TABLE_ARGS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(Integer)


# --------------------------------------------------------------------------------------------
# The registrar (revision 0002): subscribers, DIDs, and the location service's bindings.


class SubscriberRow(Base):
    """A user whose phones register with the switch and who may call out (billed to
    ``account_id`` at ``tariff_id``; no tariff: it can only receive).

    No password is stored: only the digest HA1 for each algorithm (RFC 7616 3.4.2), computed for
    ``realm`` (the node's ``sip_realm`` when provisioned: changing the realm means setting the
    passwords again).  ``allowed_cidrs`` is a JSON list of networks; empty allows any source.
    """

    __tablename__ = "subscribers"
    __table_args__ = (MYSQL_TABLE_ARGS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    realm: Mapped[str] = mapped_column(String(128))
    ha1_md5: Mapped[str] = mapped_column(String(32))
    ha1_sha256: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    tariff_id: Mapped[int | None] = mapped_column(ForeignKey("tariffs.id"), index=True)
    allowed_cidrs: Mapped[list[str]] = mapped_column(JSON)
    max_contacts: Mapped[int] = mapped_column(Integer)
    max_calls: Mapped[int | None] = mapped_column(Integer)
    caller_id: Mapped[str | None] = mapped_column(String(PREFIX_LENGTH))
    enabled: Mapped[bool] = mapped_column(Boolean)


class DidRow(Base):
    """A number we host, owned by a subscriber or by a peer (exactly one of the two)."""

    __tablename__ = "dids"
    __table_args__ = (
        CheckConstraint("(subscriber_id IS NULL) <> (peer_id IS NULL)", name="one_owner"),
        MYSQL_TABLE_ARGS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(PREFIX_LENGTH), unique=True)
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id"), index=True)
    peer_id: Mapped[int | None] = mapped_column(ForeignKey("peers.id"), index=True)
    enabled: Mapped[bool] = mapped_column(Boolean)


class RegistrationRow(Base):
    """A binding of the location service, persisted by the node that holds it (``node``) so
    that it survives a restart.  Written behind the call path; ``id`` is a digest of the AOR and
    the normalised contact.  Not configuration: no foreign keys, no config_version."""

    __tablename__ = "registrations"
    __table_args__ = (Index(None, "node", "expires_at"), MYSQL_TABLE_ARGS)

    node: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    aor: Mapped[str] = mapped_column(String(NAME_LENGTH))
    contact: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    registered_at: Mapped[datetime] = mapped_column(UtcDateTime())
    call_id: Mapped[str] = mapped_column(String(255))
    cseq: Mapped[int] = mapped_column(Integer)
    transport: Mapped[str] = mapped_column(String(8))
    source_host: Mapped[str] = mapped_column(String(64))
    source_port: Mapped[int] = mapped_column(Integer)
    user_agent: Mapped[str] = mapped_column(String(255))
    q: Mapped[float | None] = mapped_column(Float)
    origin_node: Mapped[str] = mapped_column(String(NAME_LENGTH))


# --------------------------------------------------------------------------------------------
# Web access (revision 0003).  Users are configuration (written on the primary, replicated),
# so a replica's read-only UI still lets every user log in.


class UserRole(enum.StrEnum):
    ADMIN = "admin"  # everything, users and settings included
    OPERATOR = "operator"  # configuration, balances, hanging up calls
    READ_ONLY = "read-only"  # looks only


class UserRow(Base):
    """A person who logs in to the web UI.  ``password_hash`` is argon2id (PHC string)."""

    __tablename__ = "users"
    __table_args__ = (MYSQL_TABLE_ARGS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    role: Mapped[UserRole] = mapped_column(_enum(UserRole))
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    enabled: Mapped[bool] = mapped_column(Boolean)


class ApiTokenRow(Base):
    """A REST API token of a user.  Only the SHA-256 of the token is kept: tokens are 256-bit
    random, so a fast hash is safe, and every API request can check one cheaply."""

    __tablename__ = "api_tokens"
    __table_args__ = (MYSQL_TABLE_ARGS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class NodeRow(Base):
    """A node of the cluster: configuration like any other, written on the primary by the node
    itself when it starts, replicated to every node (see smartswitch.cluster.nodes)."""

    __tablename__ = "nodes"
    __table_args__ = (MYSQL_TABLE_ARGS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    dedicated_ip: Mapped[str] = mapped_column(String(64), default="")
    sip_address: Mapped[str] = mapped_column(String(128), default="")
    http_address: Mapped[str] = mapped_column(String(128), default="")
    shared_ip: Mapped[str] = mapped_column(String(64), default="")
    db_scheme: Mapped[str] = mapped_column(String(16), default="single")
    registered_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # What the node runs (revision 0008). Deferred and defaulted by the server, so this code
    # also works against the schema before 0008 (a rolling upgrade runs new nodes on the old
    # schema until `smartswitch db upgrade`): a select never names them unless asked, and an
    # insert names them only when set (smartswitch.cluster.nodes does so only if they exist).
    version: Mapped[str] = mapped_column(String(32), server_default="", deferred=True)
    schema_head: Mapped[str] = mapped_column(String(32), server_default="", deferred=True)


# --------------------------------------------------------------------------------------------
# The audit log of configuration and balance changes (revision 0005).


class ConfigAuditRow(Base):
    """One change of configuration or of a balance: who (a user, ``user (token NAME)`` for an
    API token, ``provision``, ``cli``), when, from where (the client's address), and what:
    the entity, its name and ``changes``, a JSON object of field -> [before, after] with
    secrets masked. Written by the admin layer in the transaction of the change, so it is on
    the primary and replicates like configuration. (Not the money audit of ``smartswitch
    audit``, which proves balances from balance_changes.)"""

    __tablename__ = "config_audit"
    __table_args__ = (
        Index(None, "at"),
        Index(None, "entity", "name"),
        MYSQL_TABLE_ARGS,
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)  # a ULID: time-ordered
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    actor: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(255))
    address: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))
    entity: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(255))
    changes: Mapped[dict[str, Any]] = mapped_column(JSON)


# Who the primary is (revision 0006): the replicated cluster state and its history.


class ClusterStateRow(Base):
    """A single row (id 1): the current primary and the epoch. Written on the (new) primary in
    the transaction that records its promotion, so it replicates like configuration."""

    __tablename__ = "cluster_state"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"), MYSQL_TABLE_ARGS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    epoch: Mapped[int] = mapped_column(BigInteger)
    primary_node: Mapped[str] = mapped_column(String(NAME_LENGTH))
    primary_address: Mapped[str] = mapped_column(String(128))
    changed_at: Mapped[datetime] = mapped_column(UtcDateTime())


class PromotionRow(Base):
    """One promotion: who became primary, replacing whom, when, why, from which GTID."""

    __tablename__ = "promotions"
    __table_args__ = (MYSQL_TABLE_ARGS,)

    epoch: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    node: Mapped[str] = mapped_column(String(NAME_LENGTH))
    address: Mapped[str] = mapped_column(String(128))
    previous_node: Mapped[str] = mapped_column(String(NAME_LENGTH))
    reason: Mapped[str] = mapped_column(String(255))
    automatic: Mapped[bool] = mapped_column(Boolean)
    from_gtid: Mapped[str] = mapped_column(String(1024))
    promoted_at: Mapped[datetime] = mapped_column(UtcDateTime())
