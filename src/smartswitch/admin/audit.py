"""``smartswitch audit``: proves the money. For every account, its balance equals the sum of
its balance changes (opening balance, top-ups, adjustments, rated CDRs); every rated CDR moved
exactly its price and cost; no money moved for a CDR that does not exist; no call was recorded
twice. Run it against the primary (or any node whose replica has caught up)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from smartswitch.store.database import session_factory
from smartswitch.store.schema import AccountRow, BalanceChangeKind, BalanceChangeRow, CdrRow


@dataclass(slots=True)
class AuditReport:
    accounts: int = 0
    cdrs: int = 0
    movements: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        lines = [f"accounts: {self.accounts}, CDRs: {self.cdrs}, money movements: {self.movements}"]
        lines += [f"DIFFERENCE: {p}" for p in self.problems]
        lines.append("audit: exact" if self.ok else f"audit: {len(self.problems)} differences")
        return "\n".join(lines)


async def run_audit(engine: AsyncEngine) -> AuditReport:
    report = AuditReport()
    async with session_factory(engine)() as session:
        sums: dict[int, Decimal] = dict(
            (
                await session.execute(
                    select(BalanceChangeRow.account_id, func.sum(BalanceChangeRow.amount)).group_by(
                        BalanceChangeRow.account_id
                    )
                )
            ).all()
        )
        for account in await session.scalars(select(AccountRow).order_by(AccountRow.name)):
            report.accounts += 1
            moved = Decimal(sums.pop(account.id, Decimal(0)) or 0)
            if moved != account.balance:
                report.problems.append(
                    f"account {account.name}: balance {account.balance} but its changes sum to "
                    f"{moved} ({account.balance - moved:+})"
                )
        for account_id, moved in sums.items():
            report.problems.append(f"money moved for unknown account id {account_id}: {moved}")

        movements: dict[str, Decimal] = {}
        rows = await session.execute(
            select(BalanceChangeRow.id, BalanceChangeRow.amount, BalanceChangeRow.reference).where(
                BalanceChangeRow.kind == BalanceChangeKind.CDR
            )
        )
        references: set[str] = set()
        for change_id, amount, reference in rows:
            report.movements += 1
            movements[change_id] = amount
            if reference:
                references.add(reference)

        seen_calls: dict[tuple[str, str], str] = {}
        result = await session.stream(
            select(
                CdrRow.id, CdrRow.node, CdrRow.call_id, CdrRow.price, CdrRow.cost
            ).execution_options(yield_per=5000)
        )
        cdr_ids: set[str] = set()
        async for cdr_id, node, call_id, price, cost in result:
            report.cdrs += 1
            cdr_ids.add(cdr_id)
            for suffix, amount in ((":c", price), (":s", cost)):
                found = movements.get(cdr_id + suffix)
                expected = -amount if amount else None
                if found != expected:
                    report.problems.append(
                        f"CDR {cdr_id}: {suffix[1:]} movement {found} but the CDR says {expected}"
                    )
            key = (node, call_id)
            if key in seen_calls:
                report.problems.append(
                    f"call {call_id} on {node} recorded twice: CDRs {seen_calls[key]} and {cdr_id}"
                )
            seen_calls[key] = cdr_id
        for reference in sorted(references - cdr_ids):
            report.problems.append(f"money moved for a CDR that does not exist: {reference}")
    return report
