"""The replicated cluster state: the epoch only moves on, and the history says who, when, why,
from which GTID."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from smartswitch.store.cluster_state import (
    promotion_history,
    read_cluster_state,
    record_promotion,
)
from smartswitch.store.database import session_factory

from .helpers import run_with_engine

T0 = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)


def test_no_primary_recorded_reads_none(db_url: str) -> None:
    async def check(engine: AsyncEngine) -> None:
        async with session_factory(engine)() as session:
            assert await read_cluster_state(session) is None
            assert await promotion_history(session) == []

    run_with_engine(db_url, check)


def test_epochs_move_on_and_history_keeps_every_promotion(db_url: str) -> None:
    async def check(engine: AsyncEngine) -> None:
        sessions = session_factory(engine)
        async with sessions() as session, session.begin():
            first = await record_promotion(
                session,
                "node1",
                "10.0.0.11:3306",
                reason="initial primary",
                automatic=False,
                from_gtid="",
                now=T0,
            )
        assert first.epoch == 1 and first.previous_node == ""
        async with sessions() as session, session.begin():
            # etcd's leader key revision is a floor: the epoch jumps to it.
            second = await record_promotion(
                session,
                "node2",
                "10.0.0.12:3306",
                reason="failover: node1's lease expired",
                automatic=True,
                from_gtid="0-1-105",
                epoch=40,
                now=T0 + timedelta(minutes=5),
            )
        assert (second.epoch, second.previous_node) == (40, "node1")
        async with sessions() as session, session.begin():
            # A floor below the current epoch never takes it back.
            third = await record_promotion(
                session,
                "node1",
                "10.0.0.11:3306",
                reason="switchover " + "x" * 400,
                automatic=False,
                from_gtid="0-2-230",
                epoch=7,
                now=T0 + timedelta(minutes=9),
            )
        assert third.epoch == 41 and len(third.reason) == 255
        async with sessions() as session:
            state = await read_cluster_state(session)
            assert state is not None
            assert (state.epoch, state.primary_node, state.primary_address) == (
                41,
                "node1",
                "10.0.0.11:3306",
            )
            assert state.changed_at == T0 + timedelta(minutes=9)
            history = await promotion_history(session)
            assert [p.epoch for p in history] == [41, 40, 1]
            assert history[1].automatic and history[1].from_gtid == "0-1-105"
            deposed_node1 = await promotion_history(session, previous_node="node1")
            assert [p.epoch for p in deposed_node1] == [40]

    run_with_engine(db_url, check)
