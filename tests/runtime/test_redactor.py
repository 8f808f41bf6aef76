"""The process's one redaction follows the pools' key sets: a key added is redacted from then on,
in log lines too, and a pool's verdict evidence is scrubbed before it becomes an event."""

from __future__ import annotations

import io
import logging

from keyrelay.config import PoolSettings
from keyrelay.core.model import KeyRecord, Outcome, Verdict
from keyrelay.logs import access_log, setup_logging
from keyrelay.runtime import redactor
from keyrelay.runtime.pool import KeyPool
from keyrelay.stores.memory import MemoryStore

LATE = "f3b9c1d7e5a2048c6b1e9d3f7a5c2e80"  # prefixless, added while running
LOGGED = "Zq_4rT-9vK_2mN-8pL_6xW-3cB_7hJ"  # '-' and '_' inside


def test_a_key_added_later_is_redacted_from_then_on():
    pool = KeyPool(PoolSettings("late"), MemoryStore())
    assert redactor.scrub(f"echo {LATE}") == f"echo {LATE}"  # not a key of any pool yet
    pool.upsert(KeyRecord("k_late", "late", LATE))
    assert LATE[4:20] not in redactor.scrub(f"upstream said {LATE[4:20]} and {LATE}")
    pool.remove("k_late")
    assert redactor.scrub(f"echo {LATE}") == f"echo {LATE}"


def test_log_lines_lose_the_key_and_the_verdict_evidence_is_scrubbed():
    pool = KeyPool(PoolSettings("logs"), MemoryStore())
    pool.upsert(KeyRecord("k_log", "logs", LOGGED))
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, access_log._handler)
    out = io.StringIO()
    setup_logging("debug", out)
    try:
        logging.getLogger("keyrelay.test").debug("upstream error body=%s", f'{{"code": "{LOGGED}"}}')
        for h in root.handlers:
            h.flush()
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
            h.close()
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        access_log._handler = saved[2]
    assert LOGGED[:8] not in out.getvalue() and "upstream error" in out.getvalue()
    lease = pool.acquire()
    assert lease is not None
    t = pool.observe(lease, Verdict(Outcome.INVALID_KEY, 401, LOGGED, f"bad key {LOGGED}", reason="invalid"), release=True)
    assert t is not None and LOGGED[8:16] not in t.detail
