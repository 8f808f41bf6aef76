"""``keyrelay check``: probe keys now (one sweep of the key checker) and show what changed."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from keyrelay.cli.common import (
    CliError,
    CliFailure,
    config_option,
    echo_json,
    load,
    plural,
    print_table,
    require_pool,
    with_store,
)
from keyrelay.config import PoolSettings
from keyrelay.core.machine import ProbeKind
from keyrelay.core.model import KeyState
from keyrelay.core.policy import PROBES
from keyrelay.providers import get_dialect
from keyrelay.providers.probes import build_probes
from keyrelay.runtime.checker import Checker, CheckRow, SweepReport
from keyrelay.runtime.pool import KeyPool
from keyrelay.stores import Store

__all__ = ["check"]


@click.command()
@config_option
@click.option("--pool", "pool_name", default=None, help="Only this pool (default: every pool).")
@click.option("--probe", "probes", multiple=True, type=click.Choice(PROBES),
              help="Run this probe instead of the pool's configured ones (repeatable).")
@click.option("--dry-run", is_flag=True, help="Show what would change, and change nothing.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per probed key, in an array.")
def check(pool_name: str | None, probes: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Probe every key now (disabled and cooling keys excepted) and move the ones the answers
    condemn or clear, through the same state machine as live traffic.

    Probes per pool come from [pools.checker] probes (default: models): billing (one-api /
    new-api /dashboard/billing/*), models, balance (DeepSeek, OpenRouter, SiliconFlow,
    Moonshot) and completion. An answer that cannot be read changes nothing.
    """
    settings = load()
    selected = [settings.pool(require_pool(settings, pool_name))] if pool_name else list(settings.pools)
    for ps in selected:
        try:
            build_probes(ps.checker, ps.base_url, get_dialect(ps.provider), probes or None)
        except ValueError as exc:
            raise CliError(f"pool {ps.name}: {exc}") from None
    quiet = logging.getLogger("keyrelay")
    if not quiet.handlers:  # our table says it all; no log lines on stderr
        quiet.addHandler(logging.NullHandler())
    reports = with_store(
        settings, lambda store: _sweep(store, selected, probes, dry_run, show_progress=not as_json), existing=True
    )
    if as_json:
        echo_json([_row_json(row, r.dry_run) for r in reports for row in r.rows])
    else:
        _print(reports)
    locked = [r.pool for r in reports if r.locked_out]
    if locked:
        raise CliFailure(
            f"pool {', '.join(locked)}: a sweep is running elsewhere (a gateway holds the checker lock); "
            "try again shortly, or use --dry-run"
        )


async def _sweep(
    store: Store, selected: Sequence[PoolSettings], probes: tuple[str, ...], dry_run: bool, show_progress: bool
) -> list[SweepReport]:
    pools = []
    for ps in selected:
        kp = KeyPool(ps, store)
        for rec in await store.load(ps.name):
            kp.upsert(rec)
        pools.append(kp)
    checker = Checker(store, pools)
    err = Console(stderr=True)
    reports = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True, disable=not (show_progress and err.is_terminal)) as bar:
        async with Checker.session() as session:
            for kp in pools:
                task = bar.add_task(f"checking {kp.name}", total=None)

                def advance(done: int, total: int, task: TaskID = task) -> None:
                    bar.update(task, completed=done, total=total)

                reports.append(await checker.sweep(
                    kp, session, force=True, dry_run=dry_run, probes=probes or None, pace=False, progress=advance
                ))
    return reports


def _balance(row: CheckRow) -> str:
    r = row.result
    return "" if r.balance is None else f"{r.balance:g} {r.currency}".strip()


def _change(row: CheckRow) -> str:
    if row.correlated:
        return f"{row.before.value} (kept: most of the pool failed at once)"
    if row.changed:
        return f"{row.before.value} → {row.after.value}"
    if row.before is KeyState.EXHAUSTED and row.result.kind is ProbeKind.EXHAUSTED:
        return "still exhausted"
    if row.transition is not None:  # same state, a new recheck time
        return f"{row.before.value} (recheck later)"
    return row.before.value


def _print(reports: Sequence[SweepReport]) -> None:
    rows = [
        (row.key_id, row.pool, row.masked, _change(row), _balance(row), row.result.describe())
        for r in reports for row in r.rows
    ]
    if rows:
        print_table(("id", "pool", "key", "state", "balance", "evidence"), rows, right=("balance",))
    for r in reports:
        if r.locked_out:
            continue
        changed = len(r.changed)
        unknown = sum(row.result.kind is ProbeKind.UNKNOWN for row in r.rows)
        kept = sum(row.correlated for row in r.rows)
        verb = "would change" if r.dry_run else "changed"
        line = f"pool {r.pool}: probed {plural(len(r.rows), 'key')}; {changed} {verb}, {unknown} unknown"
        if kept:
            line += f", {kept} kept in (correlated failure: the upstream, not the keys)"
        click.echo(line + (" (dry run: nothing was written)" if r.dry_run else ""))


def _row_json(row: CheckRow, dry_run: bool) -> dict[str, object]:
    r = row.result
    return {
        "key_id": row.key_id,
        "pool": row.pool,
        "masked": row.masked,
        "before": row.before.value,
        "after": row.after.value,
        "changed": row.changed,
        "correlated": row.correlated,
        "dry_run": dry_run,
        "probe": r.probe,
        "result": r.kind.value,
        "reason": row.transition.reason if row.transition is not None else r.reason,
        "status": r.status or None,
        "code": r.code,
        "balance": r.balance,
        "currency": r.currency or None,
        "evidence": r.describe(),
    }
