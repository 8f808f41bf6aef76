"""100,000 keys page fast: each page is one pass over the pool in memory. The times are printed
(``-s``) and recorded in docs/design.md, not asserted: the machine's load varies."""

from __future__ import annotations

import time

import pytest

N = 100_000


@pytest.mark.parametrize("store_url", ["memory://", "sqlite"])
async def test_a_page_of_100k_keys(make_admin, tmp_path, store_url):
    url = f"sqlite:///{tmp_path / 'k.db'}" if store_url == "sqlite" else store_url
    a = await make_admin(store_url=url)
    secrets = [f"sk-bulk-{i:08d}-{'x' * 24}" for i in range(N)]
    for i in range(0, N, 20_000):
        await a.gw.store.add_keys("openai", secrets[i:i + 20_000], time.time())
    await a.gw.runtime.sync()
    assert len(a.gw.runtime.pools["openai"].records()) == N + 1
    timings: dict[str, float] = {}

    async def timed(name: str, path: str) -> dict:
        t0 = time.perf_counter()
        status, page = await a.get(path)
        timings[name] = (time.perf_counter() - t0) * 1000
        assert status == 200, page
        return page

    await timed("first page (cold)", "/keys?limit=100")
    first = await timed("first page", "/keys?limit=100")
    assert first["total"] == N + 1 and len(first["data"]) == 100
    second = await timed("next page", f"/keys?limit=100&cursor={first['next_cursor']}")
    assert first["data"][-1]["id"] < second["data"][0]["id"]
    await timed("sorted by requests, desc (reads every key's counters)", "/keys?limit=100&sort=requests&order=desc")
    await timed("sorted by requests again", "/keys?limit=100&sort=requests&order=desc")
    await timed("sorted by since", "/keys?limit=500&sort=since")
    found = await timed("search by masked tail", "/keys?q=" + secrets[4242][-4:])
    assert found["total"] == sum(s.endswith(secrets[4242][-4:]) for s in secrets)
    await timed("filter by state", "/keys?state=disabled")
    await timed("pools", "/pools")
    print(f"\n{store_url}, {N:,} keys: " + "; ".join(f"{k} {v:.0f} ms" for k, v in timings.items()))
