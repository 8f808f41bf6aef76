"""Fallback load generator (when wrk is not installed): N connections posting for T seconds.

    python bench/loadgen.py URL SECONDS CONNECTIONS TOKEN BODY ["Name: value" ...]
        → prints "rps p50_ms p99_ms"; TOKEN "-" sends no Authorization (the token in a header given)
"""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp


async def main(url: str, seconds: float, conns: int, token: str, body: str, extra: list[str]) -> None:
    lat: list[float] = []
    end = time.perf_counter() + seconds
    headers = {"Content-Type": "application/json"} if token == "-" else {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    headers.update(h.split(": ", 1) for h in extra)  # type: ignore[misc]

    async def worker(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as r:
                await r.read()
                if r.status != 200:
                    raise SystemExit(f"HTTP {r.status}")
            lat.append(time.perf_counter() - t0)

    start = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conns)) as s:
        await asyncio.gather(*(worker(s) for _ in range(conns)))
    took = time.perf_counter() - start
    lat.sort()
    print(f"{len(lat) / took:.1f} {lat[len(lat) // 2] * 1000:.3f} {lat[int(len(lat) * 0.99)] * 1000:.3f}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6:]))
