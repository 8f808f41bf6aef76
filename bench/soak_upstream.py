"""The upstream side of ``bench_soak.py``: the key mix (which keys are bad, how, and which change
during the run) and keyrelay's fake upstream serving it in a process of its own.

    python bench/soak_upstream.py PORT     # reads its plan from stdin (see ``serve``)

Behaviours are the fake's (``keyrelay.testing.fake_upstream.Behavior``) plus ``reset``: the
connection is reset (TCP RST, ``SO_LINGER`` 0) once the request is read, without an answer.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import string
import struct
import sys
from dataclasses import dataclass, field
from typing import Any

RESET = "reset"

#: (name, share of the pool, spec); the rest of the pool is OK. Keys that stay bad but in traffic
#: (flaky, hang, stream_cut, stream_error, reset) are ~4 % of the live keys: with
#: ``max_attempts`` 6 a request meets six of them in a row about once in 10^8.
MIX: list[tuple[str, float, dict[str, Any]]] = [
    ("invalid", 0.06, {"behavior": "invalid"}),
    ("deactivated", 0.02, {"behavior": "deactivated"}),
    ("quota", 0.05, {"behavior": "quota"}),
    ("rate_limited", 0.04, {"behavior": "rate_limited", "retry_after": 4.0}),
    ("rate_limited_recovers", 0.04, {"behavior": "rate_limited", "retry_after": 3.0, "rate_limit_for": 0.2}),
    ("flaky", 0.02, {"behavior": "flaky", "flaky_rate": 0.5}),
    ("slow", 0.03, {"behavior": "slow", "delay": 0.4}),
    ("hang", 0.01, {"behavior": "hang"}),
    ("stream_cut", 0.015, {"behavior": "stream_cut"}),
    ("stream_error", 0.01, {"behavior": "stream_error"}),
    ("reset", 0.01, {"behavior": RESET}),
]

#: (when, as a share of the run; how many OK keys, as a share of the pool; what they become).
#: Plus: at 0.5 the flaky keys turn OK, at 0.6 the forever-rate-limited ones recover.
SWITCHES: list[tuple[float, float, dict[str, Any]]] = [
    (0.25, 0.04, {"behavior": "invalid"}),
    (0.30, 0.03, {"behavior": "quota"}),
    (0.35, 0.03, {"behavior": "rate_limited", "retry_after": 2.0, "rate_limit_for": 0.15}),
    (0.50, 0.01, {"behavior": "flaky", "flaky_rate": 0.5}),
    (0.75, 0.02, {"behavior": "invalid"}),
]


@dataclass
class Plan:
    """Every key's spec at the start and the switches, times in seconds from the start."""

    keys: dict[str, dict[str, Any]]
    group: dict[str, str]  #: key → its group at the start (a MIX name or "ok")
    switches: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)

    def stream_cutters(self) -> set[str]:
        """Keys that cut streams at some point of the run (their cut streams are expected)."""
        cut = {k for k, s in self.keys.items() if s["behavior"] == "stream_cut"}
        return cut | {k for _, k, s in self.switches if s["behavior"] == "stream_cut"}

    def always_ok(self) -> set[str]:
        switched = {k for _, k, _ in self.switches}
        return {k for k, g in self.group.items() if g == "ok" and k not in switched}

    def spec_at_end(self, key: str) -> dict[str, Any]:
        spec = self.keys[key]
        for _, k, s in self.switches:
            if k == key:
                spec = s
        return spec


def _timed(spec: dict[str, Any], seconds: float) -> dict[str, Any]:
    """``rate_limit_for`` given as a share of the run, in seconds (at least 3)."""
    if "rate_limit_for" in spec:
        return {**spec, "rate_limit_for": max(3.0, spec["rate_limit_for"] * seconds)}
    return spec


def make_plan(n: int, seconds: float, seed: int = 16) -> Plan:
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits
    keys = [f"sk-soak-{i:04d}-" + "".join(rng.choice(alphabet) for _ in range(40)) for i in range(n)]
    order = keys[:]
    rng.shuffle(order)
    specs: dict[str, dict[str, Any]] = {}
    group: dict[str, str] = {}
    for name, share, spec in MIX:
        for _ in range(max(1, round(share * n))):
            k = order.pop()
            specs[k], group[k] = _timed(spec, seconds), name
    for k in order:
        specs[k], group[k] = {"behavior": "ok"}, "ok"
    plan = Plan(specs, group)
    for when, share, spec in SWITCHES:
        for _ in range(max(1, round(share * n))):
            plan.switches.append((when * seconds, order.pop(), _timed(spec, seconds)))
    for k, g in group.items():
        if g == "flaky":
            plan.switches.append((0.5 * seconds, k, {"behavior": "ok"}))
        if g == "rate_limited":
            plan.switches.append((0.6 * seconds, k, {"behavior": "ok"}))
    plan.switches.sort(key=lambda s: s[0])
    return plan


# -- the upstream process ----------------------------------------------------------------------


async def serve(port: int) -> None:
    """Serve on ``port``. stdin: a first line ``{"keys": {key: spec}, "chunk_delay": s}``, then
    one ``{"key": key, "spec": spec}`` per switch; at its end, one JSON line of what was served."""
    from keyrelay.testing.fake_upstream import Behavior, FakeUpstream, KeySpec

    def spec_of(d: dict[str, Any]) -> KeySpec:
        return KeySpec(Behavior(d["behavior"]), retry_after=d.get("retry_after"),
                       rate_limit_for=d.get("rate_limit_for"), flaky_rate=d.get("flaky_rate", 0.5),
                       delay=d.get("delay", 0.0))

    class SoakUpstream(FakeUpstream):
        def __init__(self, **kw: Any) -> None:
            super().__init__({}, **kw)
            self.resets: set[str] = set()
            self.reset_count = 0

        def apply(self, key: str, d: dict[str, Any]) -> None:
            if d["behavior"] == RESET:
                self.resets.add(key)
            else:
                self.resets.discard(key)
                self.set(key, spec_of(d))

        async def _serve(self, request: Any, build: Any, kind: str, ctx: Any) -> Any:
            auth = request.headers.get("Authorization", "")
            if auth[7:].strip() in self.resets:
                await request.read()
                self.reset_count += 1
                sock = request.transport.get_extra_info("socket") if request.transport else None
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    request.transport.close()
                raise asyncio.CancelledError
            return await super()._serve(request, build, kind, ctx)

    loop = asyncio.get_running_loop()
    first = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    up = SoakUpstream(record_calls=False, chunk_delay=first.get("chunk_delay", 0.0))
    for key, d in first["keys"].items():
        up.apply(key, d)
    await up.start(port=port)
    print("ready", flush=True)
    switched = 0
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        cmd = json.loads(line)
        up.apply(cmd["key"], cmd["spec"])
        switched += 1
    served = sum(s.requests for k, s in up.served.items() if k is not None)
    await up.close()
    print(json.dumps({"served": served, "resets": up.reset_count, "switched": switched}), flush=True)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
