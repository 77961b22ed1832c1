"""The ``smartswitch`` command."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import logging.handlers
import queue
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smartswitch.runtime.config import ConfigError, NodeConfig, load_config, parse_hostport
from smartswitch.transport.tls import TlsError

if TYPE_CHECKING:  # the store's and admin's modules load only for the commands that use them
    from smartswitch.admin.audit_log import Who
    from smartswitch.admin.writer import ConfigInvalid

CLI_ACTOR = "cli"  # who made a change from the command line, in the audit log


def _hostport(text: str) -> str:
    try:
        parse_hostport(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smartswitch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start a node")
    run.add_argument("--config", type=Path, help="TOML node configuration")
    run.add_argument("--data-dir", type=Path, help="where the node keeps its data")
    run.add_argument("--sip-listen", type=_hostport, metavar="HOST:PORT")
    run.add_argument("--http-listen", type=_hostport, metavar="HOST:PORT")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])

    def store_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, help="TOML node configuration")
        p.add_argument("--data-dir", type=Path, help="where the node keeps its data")
        p.add_argument("--database-url", help="a database other than the embedded SQLite")

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_upgrade = db_sub.add_parser(
        "upgrade",
        help="create or migrate the schema (in a cluster: on the primary, once nodes allow)",
    )
    store_args(db_upgrade)
    db_upgrade.add_argument(
        "--ignore-node",
        action="append",
        default=[],
        metavar="NAME",
        help="a registered node gone for good: its release does not hold back the upgrade",
    )

    provision = sub.add_parser("provision", help="apply a declarative YAML configuration")
    provision.add_argument("file", type=Path)
    provision.add_argument("--dry-run", action="store_true", help="validate, change nothing")
    store_args(provision)

    cdr = sub.add_parser("cdr", help="call detail records")
    cdr_sub = cdr.add_subparsers(dest="cdr_command", required=True)
    export = cdr_sub.add_parser("export", help="write CDRs to standard output")
    export.add_argument("--format", choices=["csv", "json"], default="csv")
    export.add_argument("--since", type=_since, help="ISO date or time (UTC if no zone)")
    store_args(export)

    accounts = sub.add_parser("accounts", help="list accounts and balances")
    accounts.add_argument("--format", choices=["table", "json"], default="table")
    store_args(accounts)

    audit = sub.add_parser("audit", help="prove balances = opening + credits - rated CDRs")
    store_args(audit)

    audit_log = sub.add_parser(
        "audit-log", help="the audit log of configuration and balance changes (who, what, when)"
    )
    audit_log_sub = audit_log.add_subparsers(dest="audit_log_command", required=True)
    audit_export = audit_log_sub.add_parser("export", help="write entries to standard output")
    audit_export.add_argument("--format", choices=["csv", "json"], default="csv")
    audit_export.add_argument("--since", type=_since, help="ISO date or time (UTC if no zone)")
    audit_export.add_argument("--until", type=_since, help="ISO date or time (UTC if no zone)")
    audit_export.add_argument("--entity", help="account, tariff, peer, route, subscriber, ...")
    audit_export.add_argument("--name", default="", help="entities whose name contains this")
    audit_export.add_argument("--actor", default="", help="changes made by (part of) this name")
    store_args(audit_export)

    user = sub.add_parser("user", help="web UI and API users")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    user_add = user_sub.add_parser("add", help="add a user (prints a new random password)")
    user_add.add_argument("name")
    user_add.add_argument("--role", choices=["admin", "operator", "read-only"], required=True)
    user_add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    store_args(user_add)

    subscriber = sub.add_parser("subscriber", help="the registrar's subscribers")
    subscriber_sub = subscriber.add_subparsers(dest="subscriber_command", required=True)
    password = subscriber_sub.add_parser(
        "password", help="set a subscriber's password (checked by the password policy)"
    )
    password.add_argument("username")
    how = password.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "--generate", action="store_true", help="make a strong one, set it and print it once"
    )
    how.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    store_args(password)

    cluster = sub.add_parser("cluster", help="the cluster's databases and nodes")
    cluster_sub = cluster.add_subparsers(dest="cluster_command", required=True)
    init = cluster_sub.add_parser("init-primary", help="make this node's MariaDB the primary")
    store_args(init)
    replica = cluster_sub.add_parser(
        "add-replica", help="snapshot the primary into this node's MariaDB and replicate"
    )
    store_args(replica)
    replica.add_argument("--primary-database-url", help="the primary (default: from config)")
    promote = cluster_sub.add_parser(
        "promote",
        help="make NODE's database the primary (switchover; failover when the primary is dead)",
    )
    promote.add_argument("node", help="the node whose database becomes the primary")
    promote.add_argument("--reason", default="", help="recorded in the promotion history")
    store_args(promote)
    rejoin = cluster_sub.add_parser(
        "rejoin", help="make this node's database a replica of the newest epoch's primary"
    )
    store_args(rejoin)
    status = cluster_sub.add_parser(
        "status", help="every node: up or down, load, role, replication, outbox"
    )
    status.add_argument("--format", choices=["table", "json"], default="table")
    store_args(status)
    dns = cluster_sub.add_parser(
        "dns", help="A and SRV records of the nodes and the shared IP, for a DNS zone"
    )
    dns.add_argument("zone", help="the zone the records go in, e.g. voice.example.net")
    dns.add_argument("--ttl", type=int, default=60, help="seconds (default 60)")
    store_args(dns)

    init = sub.add_parser("init", help="write a commented node configuration for this host")
    init.add_argument(
        "path", type=Path, nargs="?", default=Path("/etc/smartswitch/node.toml"), help="where"
    )
    init.add_argument("--node-name", help="default: this host's name")
    init.add_argument("--dedicated-ip", help="default: the address this host's name resolves to")
    init.add_argument("--data-dir", type=Path, help="default: by where the file goes")
    init.add_argument("--sip-listen", type=_hostport, metavar="HOST:PORT")
    init.add_argument("--http-listen", type=_hostport, metavar="HOST:PORT")
    init.add_argument("--force", action="store_true", help="replace an existing file")

    units = sub.add_parser("units", help="write the systemd units of this installation")
    units.add_argument("--dir", type=Path, default=Path("/etc/systemd/system"), dest="directory")
    units.add_argument("--config", type=Path, default=Path("/etc/smartswitch/node.toml"))
    units.add_argument("--data-dir", type=Path, default=Path("/var/lib/smartswitch"))

    drain = sub.add_parser(
        "drain",
        help="take this host's node out of service: refuse new calls, let these end, "
        "flush the outbox, stop",
    )
    drain.add_argument(
        "--deadline", type=float, default=300.0, help="seconds for calls to end (default 300)"
    )
    drain.add_argument(
        "--retry-after", type=int, default=60, help="Retry-After of the 503s (default 60)"
    )
    drain.add_argument(
        "--flush-timeout", type=float, default=30.0, help="seconds to deliver the outbox"
    )
    drain.add_argument("--no-wait", action="store_true", help="start the drain and return at once")
    drain.add_argument("--url", help="the node's HTTP address (default: http_listen)")
    drain.add_argument("--config", type=Path, help="TOML node configuration")
    drain.add_argument("--data-dir", type=Path, help="the node's data directory (its token)")

    registrations = sub.add_parser(
        "registrations", help="a running node's registrar: bindings, or --outbound to suppliers"
    )
    registrations.add_argument(
        "--outbound", action="store_true", help="the switch's registrations with suppliers"
    )
    registrations.add_argument("--format", choices=["table", "json"], default="table")
    registrations.add_argument("--url", help="the node's HTTP address (default: http_listen)")
    registrations.add_argument("--config", type=Path, help="TOML node configuration")
    registrations.add_argument(
        "--data-dir", type=Path, help="the node's data directory (its local API token)"
    )
    return parser


def _since(text: str) -> datetime:
    """The reader of the forms and provisioning, so a time reads alike everywhere."""
    from smartswitch.admin.fields import parse_datetime

    try:
        return parse_datetime(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _apply_flags(config: NodeConfig, args: argparse.Namespace) -> NodeConfig:
    for key in ("data_dir", "sip_listen", "http_listen", "log_level", "database_url"):
        value = getattr(args, key, None)
        if value is not None:
            setattr(config, key, value)
    return config


def _setup_logging(level: str, queued: bool = False) -> None:
    """Logging to the journal under systemd, else to standard error. ``queued`` (a running
    node): records go through a queue to a writer thread, so the event loop never waits on a
    slow stderr pipe or the journal's socket; nothing per call is logged at INFO anyway."""
    from smartswitch.runtime.systemd import CallIdFilter, JournalHandler, journal_wanted

    handler: logging.Handler
    journal = journal_wanted()
    if journal:
        # Under systemd: entries with fields (a call's id among them), the journal adds the time.
        handler = JournalHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if queued:
        # No caller lookup (a stack walk per record) and no thread or process names: no
        # format string here uses them.
        logging._srcfile = None
        logging.logThreads = False
        logging.logProcesses = False
        logging.logMultiprocessing = False
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        listener = logging.handlers.QueueListener(records, handler, respect_handler_level=True)
        listener.start()
        atexit.register(listener.stop)
        handler = logging.handlers.QueueHandler(records)
        # The queue handler merges the arguments (and a traceback) into the message before
        # the record crosses threads; the writer's own formatter adds the time, level and
        # logger name once (without this, the default format put them in the message too).
        handler.setFormatter(logging.Formatter("%(message)s"))
        if journal:
            handler.addFilter(CallIdFilter())  # the call id, before the queue merges it away
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler], force=True)
    # httpx logs every request at INFO: the cluster bus makes one per peer each second.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _run_loop(coro: object) -> None:
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        runner = asyncio.Runner()
    with runner:
        runner.run(coro)  # type: ignore[arg-type]


def cmd_run(args: argparse.Namespace) -> int:
    from smartswitch.cluster.vip import VipError
    from smartswitch.runtime.node import Node
    from smartswitch.store.migrate import SchemaError

    config = _apply_flags(load_config(args.config), args)
    _setup_logging(config.log_level, queued=True)
    config.data_dir.mkdir(parents=True, exist_ok=True)

    async def main() -> None:
        await Node(config).run()

    try:
        _run_loop(main())
    except SchemaError as exc:
        print(f"smartswitch: {exc}", file=sys.stderr)
    except VipError as exc:
        print(f"smartswitch: the shared IP: {exc}", file=sys.stderr)
        return 1
    return 0


def _store_command(args: argparse.Namespace) -> int:
    """The commands that work on the node's database without starting the node."""
    from smartswitch.admin.audit import run_audit
    from smartswitch.admin.provisioning import ProvisioningError, provision
    from smartswitch.admin.reports import export_cdrs, list_accounts
    from smartswitch.store.database import create_engine, database_url
    from smartswitch.store.migrate import SchemaError, prepare_schema

    config = _apply_flags(load_config(args.config), args)
    _setup_logging("warning")
    url = database_url(config.data_dir, config.database_url)

    async def main() -> int:
        if args.command == "db":
            return await _db_upgrade(url, config, args.ignore_node)
        try:
            # A single node's commands bring its own database up to date; in a cluster only
            # `db upgrade` on the primary migrates (store/migrate.py, expand then contract).
            await prepare_schema(url, migrate_existing=config.db_scheme == "single")
        except SchemaError as exc:
            print(f"smartswitch: {exc}", file=sys.stderr)
            return 1
        engine = create_engine(url)
        try:
            writes = args.command in ("user", "subscriber") or (
                args.command == "provision" and not args.dry_run
            )
            if writes and not await _writable(engine, config):
                return 1
            if args.command == "provision":
                try:
                    report = await provision(
                        engine, args.file, dry_run=args.dry_run, realm=config.sip_realm
                    )
                except ProvisioningError as exc:
                    print(exc, file=sys.stderr)
                    return 1
                print(report.summary())
            elif args.command == "cdr":
                await export_cdrs(engine, args.format, args.since, sys.stdout)
            elif args.command == "accounts":
                await list_accounts(engine, args.format, sys.stdout)
            elif args.command == "user":
                return await _user_add(engine, args)
            elif args.command == "subscriber":
                return await _subscriber_password(engine, args, config.sip_realm)
            elif args.command == "audit-log":
                await _audit_log_export(engine, args)
            elif args.command == "audit":
                audit = await run_audit(engine)
                print(audit.summary())
                return 0 if audit.ok else 1
        finally:
            await engine.dispose()
        return 0

    if args.command != "db":
        config.data_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(main())


async def _db_upgrade(url: str, config: NodeConfig, ignore: list[str]) -> int:
    """``smartswitch db upgrade``: on the primary (or a single node), and in a cluster only
    when no contract migration would break a node still running an older release."""
    from smartswitch.cluster.upgrade import plan_upgrade
    from smartswitch.store.database import create_engine
    from smartswitch.store.migrate import SchemaError, migrations, upgrade_async

    kind = url.split("://")[0]
    engine = create_engine(url)
    try:
        if config.db_scheme != "single" and not await _writable(engine, config):
            return 1
        try:
            plan = await plan_upgrade(engine, migrations(), set(ignore))
        except SchemaError as exc:
            print(f"smartswitch: {exc}", file=sys.stderr)
            return 1
    finally:
        await engine.dispose()
    if not plan.steps:
        print(f"database schema up to date at {plan.current} ({kind})")
        return 0
    if not plan.safe:
        print(f"smartswitch: {plan.refusal()}", file=sys.stderr)
        return 1
    await upgrade_async(url)
    for step in plan.steps:
        kind_of = "contract" if step.contract else "expand"
        print(f"  {step.revision} ({kind_of}): {step.title}")
    print(f"database schema upgraded from {plan.current or 'nothing'} to {plan.steps[-1].revision}")
    return 0


def _cli_who() -> Who:
    """Who changes configuration from the command line, as the audit log names it."""
    from smartswitch.admin.audit_log import Who

    return Who(CLI_ACTOR, "cli", "local")


def _print_issues(exc: ConfigInvalid) -> None:
    for issue in exc.issues:
        print(f"smartswitch: {issue.path}: {issue.message}", file=sys.stderr)


async def _user_add(engine: Any, args: argparse.Namespace) -> int:
    from smartswitch.admin.users import create_user
    from smartswitch.admin.writer import ConfigInvalid
    from smartswitch.store.database import session_factory

    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
    try:
        async with session_factory(engine)() as session, session.begin():
            user, made = await create_user(session, args.name, args.role, password, _cli_who())
    except ConfigInvalid as exc:
        _print_issues(exc)
        return 1
    print(f"user {user.name} ({user.role.value}) added")
    if password is None:
        print(f"password: {made}")  # the operator asked for it: shown this once, kept hashed
    return 0


async def _writable(engine: Any, config: NodeConfig) -> bool:
    """Whether this node's database takes configuration, and with automatic failover (etcd
    configured) whether the running node confirms now that it holds the primary lease; if
    not, say why."""
    from smartswitch.cluster.role import database_role

    role = await database_role(engine, config.db_scheme)
    if not role.writable:
        where = f" ({role.primary})" if role.primary else ""
        print(
            f"smartswitch: this node's database is {role.role}, not writable: "
            f"change configuration on the primary{where}",
            file=sys.stderr,
        )
        return False
    if config.etcd_members and config.db_scheme == "replication":
        # Automatic failover: a writable database is not enough, its node may be cut off from
        # the majority and replaced while it has not noticed yet. The running node holds the
        # lease (its id and epoch), so it is asked to confirm it with etcd now.
        from smartswitch.cli.control import write_fence

        refusal = await asyncio.to_thread(write_fence, config.http_listen, config.data_dir)
        if refusal:
            print(f"smartswitch: {refusal}", file=sys.stderr)
            return False
    return True


async def _audit_log_export(engine: Any, args: argparse.Namespace) -> None:
    import json

    from smartswitch.admin import audit_log
    from smartswitch.store.database import session_factory

    where = audit_log.AuditFilter(args.entity or "", args.name, args.actor, args.since, args.until)
    async with session_factory(engine)() as session:
        entries = await audit_log.query(session, where, limit=None)
    if args.format == "csv":
        sys.stdout.write(audit_log.to_csv(reversed(entries)))  # oldest first, like a log
        return
    for e in reversed(entries):
        print(json.dumps(e.as_dict(), sort_keys=True))


async def _subscriber_password(engine: Any, args: argparse.Namespace, realm: str) -> int:
    from smartswitch.admin.operations import Admin, NotFound
    from smartswitch.admin.passwords import generate_password
    from smartswitch.admin.writer import ConfigInvalid
    from smartswitch.store.database import session_factory

    password = generate_password() if args.generate else sys.stdin.readline().rstrip("\r\n")
    admin = Admin(session_factory(engine), realm=realm, who=_cli_who())
    try:
        await admin.set_subscriber_password(args.username, password, source="cli", actor=CLI_ACTOR)
    except NotFound as exc:
        print(f"smartswitch: {exc}", file=sys.stderr)
        return 1
    except ConfigInvalid as exc:
        _print_issues(exc)
        return 1
    print(f"subscriber {args.username}: password set")
    if args.generate:
        print(f"password: {password}")  # asked for: shown this once, kept only as hashes
    return 0


def _cluster_command(args: argparse.Namespace) -> int:
    from smartswitch.cli import cluster as commands

    config = _apply_flags(load_config(args.config), args)
    _setup_logging("warning")
    if args.cluster_command == "init-primary":
        return commands.init_primary(config)
    if args.cluster_command == "add-replica":
        if args.primary_database_url:
            config.primary_database_url = args.primary_database_url
        return commands.add_replica(config)
    if args.cluster_command == "dns":
        return asyncio.run(commands.dns(config, args.zone, args.ttl, sys.stdout))
    if args.cluster_command == "promote":
        return commands.promote(config, args.node, args.reason, sys.stdout)
    if args.cluster_command == "rejoin":
        return commands.rejoin(config, sys.stdout)
    return asyncio.run(commands.status(config, args.format, sys.stdout))


def _registrations_command(args: argparse.Namespace) -> int:
    from smartswitch.registrar.report import (
        RegistrationsError,
        base_url,
        fetch,
        print_registrations,
    )
    from smartswitch.web.security import local_token

    config = load_config(args.config)
    url = args.url or base_url(config.http_listen)
    # The API wants a token: on the node's own machine, the one its data directory implies.
    token = local_token(args.data_dir or config.data_dir)
    try:
        data = fetch(url, args.outbound, token=token)
    except RegistrationsError as exc:
        print(f"smartswitch: {exc}", file=sys.stderr)
        return 1
    print_registrations(data, args.outbound, args.format, sys.stdout)
    return 0


def _drain_command(args: argparse.Namespace) -> int:
    from smartswitch.cli.drain import DrainError, drain, node_url
    from smartswitch.web.security import local_control_token

    config = load_config(args.config)
    if args.deadline < 0 or args.flush_timeout < 0 or args.retry_after < 0:
        print(
            "smartswitch: --deadline, --retry-after, --flush-timeout: not negative", file=sys.stderr
        )
        return 2
    data_dir = args.data_dir or config.data_dir
    token = local_control_token(data_dir)
    if token is None:
        print(
            f"smartswitch: no node secret in {data_dir} (not the node's data directory, "
            "or not readable by this user)",
            file=sys.stderr,
        )
        return 1
    try:
        return drain(
            args.url or node_url(config.http_listen),
            token,
            deadline=args.deadline,
            retry_after=args.retry_after,
            flush_timeout=args.flush_timeout,
            wait=not args.no_wait,
            out=sys.stdout,
        )
    except DrainError as exc:
        print(f"smartswitch: {exc}", file=sys.stderr)
        return 1


def _init_command(args: argparse.Namespace) -> int:
    from smartswitch.cli.setup import default_data_dir, render_config, write_config

    path: Path = args.path
    text = render_config(
        node_name=args.node_name,
        dedicated_ip=args.dedicated_ip,
        data_dir=args.data_dir or default_data_dir(path),
        sip_listen=args.sip_listen,
        http_listen=args.http_listen,
    )
    try:
        write_config(path, text, force=args.force)
    except FileExistsError as exc:
        print(f"smartswitch: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path} (mode 600: it holds the cluster secret); start with:")
    print(f"  smartswitch run --config {path}")
    return 0


def _units_command(args: argparse.Namespace) -> int:
    from smartswitch.cli.setup import write_units

    for unit in write_units(args.directory, config=args.config, data_dir=args.data_dir):
        print(f"wrote {unit}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "init":
            return _init_command(args)
        if args.command == "units":
            return _units_command(args)
        if args.command == "run":
            return cmd_run(args)
        if args.command == "cluster":
            return _cluster_command(args)
        if args.command == "registrations":
            return _registrations_command(args)
        if args.command == "drain":
            return _drain_command(args)
        return _store_command(args)
    except (ConfigError, TlsError) as exc:
        print(f"smartswitch: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Output piped into a pager or `head` that stopped reading: not an error.
        sys.stderr.close()
        return 0
    except OSError as exc:
        print(f"smartswitch: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
