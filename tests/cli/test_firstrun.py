"""A new user's first commands: where the settings come from, where the store is, and commands
that only read never leave an empty store behind. Every mistake is one line and exit code 2."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

from keyrelay.core.masking import mask

from . import invoke, new_secret
from .test_errors import one_error_line

POOLED = '[store]\nurl = "sqlite:///data/keys.db"\n[[pools]]\nname = "{pool}"\n'


def write(directory: Path, pool: str, name: str = "keyrelay.toml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "data").mkdir(exist_ok=True)
    path = directory / name
    path.write_text(POOLED.format(pool=pool), encoding="utf-8")
    return path


def pools_of(result_stdout: str) -> set[str]:
    return {k["pool"] for k in json.loads(result_stdout)}


def test_keyrelay_toml_in_the_working_directory_is_picked_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "from-cwd")
    monkeypatch.chdir(tmp_path)
    added = invoke(None, "keys", "add", "--pool", "from-cwd", new_secret())
    assert added.exit_code == 0, added.stderr
    assert (tmp_path / "data" / "keys.db").exists()  # relative to the file: data/keys.db
    listed = invoke(None, "keys", "list", "--json")
    assert listed.exit_code == 0 and pools_of(listed.stdout) == {"from-cwd"}


def test_the_config_is_found_in_order_option_env_cwd_user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user_home = tmp_path / "xdg"
    user = write(user_home / "keyrelay", "from-user")
    env_cfg = write(tmp_path / "env", "from-env", "custom.toml")
    opt_cfg = write(tmp_path / "opt", "from-option", "mine.toml")
    cwd = tmp_path / "work"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    xdg = {"XDG_CONFIG_HOME": str(user_home)}
    if sys.platform == "darwin":  # platformdirs ignores XDG there
        pytest.skip("the user config dir is ~/Library/Application Support on macOS; XDG_CONFIG_HOME does not move it")
    for cfg, pool in ((user, "from-user"), (env_cfg, "from-env"), (opt_cfg, "from-option")):
        assert invoke(cfg, "keys", "add", "--pool", pool, new_secret()).exit_code == 0

    def pool_seen(config: Path | None, env: dict[str, str]) -> set[str]:
        r = invoke(config, "keys", "list", "--json", env=env)
        assert r.exit_code == 0, r.stderr
        return pools_of(r.stdout)

    assert pool_seen(None, xdg) == {"from-user"}
    write(cwd, "from-cwd")
    assert invoke(None, "keys", "add", "--pool", "from-cwd", new_secret(), env=xdg).exit_code == 0
    assert pool_seen(None, xdg) == {"from-cwd"}
    assert pool_seen(None, {**xdg, "KEYRELAY_CONFIG": str(env_cfg)}) == {"from-env"}
    assert pool_seen(opt_cfg, {**xdg, "KEYRELAY_CONFIG": str(env_cfg)}) == {"from-option"}


def test_a_relative_store_path_is_next_to_the_config_file_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write(tmp_path / "proj", "openai")
    secret = new_secret()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert invoke(cfg, "keys", "add", "--pool", "openai", secret).exit_code == 0
    monkeypatch.chdir(tmp_path)
    listed = invoke(cfg, "keys", "list", "--json")
    assert [k["masked"] for k in json.loads(listed.stdout)] == [mask(secret)]
    assert not list(elsewhere.iterdir()) and not (tmp_path / "data").exists()


READ_ONLY = [
    ("keys", "list"),
    ("keys", "list", "--json"),
    ("keys", "show", "k0123456789a"),
    ("keys", "enable", "k0123456789a"),
    ("events",),
    ("tokens", "list"),
    ("check", "--dry-run"),
]


@pytest.mark.parametrize("args", READ_ONLY, ids=" ".join)
def test_read_only_commands_never_create_a_store(tmp_path: Path, args: tuple[str, ...]) -> None:
    cfg = write(tmp_path, "openai")
    result = invoke(cfg, *args)
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert line.startswith(f"keyrelay: no store at {tmp_path / 'data' / 'keys.db'}")
    assert result.stdout == ""
    assert not list((tmp_path / "data").iterdir())


def test_migrate_from_a_store_that_is_not_there_creates_nothing(tmp_path: Path) -> None:
    src, dst = tmp_path / "nosuch.db", tmp_path / "new.db"
    result = invoke(None, "migrate", "--from", f"sqlite:///{src}", "--to", f"sqlite:///{dst}", "--yes")
    assert result.exit_code == 2
    assert one_error_line(result.stderr) == f"keyrelay: no store at {src} (add keys with 'keyrelay keys add', or pass --config)"
    assert not src.exists() and not dst.exists()


def test_a_redis_url_without_the_extra_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "redis" or m.startswith(("redis.", "keyrelay.stores.redis"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "redis", None)  # as if `pip install keyrelay` without [redis]
    cfg = tmp_path / "k.toml"
    cfg.write_text('[store]\nurl = "redis://127.0.0.1:6379/0"\n', encoding="utf-8")
    for args in (("keys", "list"), ("keys", "add", "--pool", "openai", new_secret())):
        result = invoke(cfg, *args)
        assert result.exit_code == 2
        assert "pip install 'keyrelay[redis]'" in one_error_line(result.stderr)


def test_serve_on_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from keyrelay.logs import access_log

    # serve runs in this process: undo its logging set-up afterwards (later tests read log records)
    root = logging.getLogger()
    monkeypatch.setattr(access_log, "_handler", None)
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    cfg = write(tmp_path, "openai")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = invoke(cfg, "serve", "--port", str(port))
    assert result.exit_code == 2
    assert one_error_line(result.stderr) == (
        f"keyrelay: cannot serve on 127.0.0.1:{port}: the address is in use (stop the other server, or pick another --port)"
    )
    assert not list((tmp_path / "data").iterdir())  # no store opened either
