"""``keyrelay demo``: a gateway and a fake upstream with good and bad keys, traffic, a live table."""

from __future__ import annotations

import click


@click.command()
@click.option("--seconds", default=20.0, show_default=True, type=click.FloatRange(1, 600), help="How long to send traffic.")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(1, 256), help="Clients in parallel.")
def demo(seconds: float, concurrency: int) -> None:
    """See keyrelay work with no API key: bad keys retire, rate-limited keys rest and come back,
    and every client request still succeeds."""
    from keyrelay.demo import run_demo

    tally = run_demo(seconds, concurrency)
    failed = tally.sent - tally.ok
    click.echo(f"\n{tally.ok} of {tally.sent} client requests succeeded" + (f"; {failed} failed" if failed else "."))
