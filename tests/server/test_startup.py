"""A gateway that cannot listen closes what it opened (the upstream session, the store): no
"Unclosed client session" after a port-in-use error."""

from __future__ import annotations

import gc
import logging
import socket
from pathlib import Path

import pytest

from keyrelay.config import parse_settings
from keyrelay.server.app import run_server


async def test_a_port_in_use_leaves_nothing_open(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = parse_settings(
            {"server": {"port": port}, "store": {"url": f"sqlite:///{tmp_path / 'k.db'}"}}, {}
        )
        with caplog.at_level(logging.DEBUG), pytest.raises(OSError):
            await run_server(settings)
    gc.collect()  # an unclosed aiohttp session would complain here (warnings are errors in this suite)
    assert "Unclosed" not in caplog.text
