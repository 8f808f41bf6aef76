"""Config errors, store failures, usage errors, ``--config`` resolution and the real entry point."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from keyrelay import __version__
from keyrelay.core.masking import mask

from . import KEYRELAY, invoke, make_config, new_secret


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("keyrelay: ")
    return lines[0]


def test_a_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    result = invoke(missing, "keys", "list")
    assert result.exit_code == 2
    assert one_error_line(result.stderr) == f"keyrelay: config error: {missing}: config file not found"
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("[server]\nport = 0\n", "server.port"),
        ('[server]\nlog_level = "loud"\n', "server.log_level"),
        ("[cache]\nsize = 1\n", "cache"),
        ('[[pools]]\nname = "x"\nstrategy = "fastest"\n', "pools[0].strategy"),
    ],
)
def test_config_errors_name_the_field_and_exit_2(tmp_path: Path, extra: str, field: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(extra, encoding="utf-8")
    for args in (("keys", "list"), ("tokens", "list"), ("events",), ("keys", "add", "--pool", "x", "sk-abc")):
        result = invoke(cfg, *args)
        assert result.exit_code == 2, args
        assert one_error_line(result.stderr).startswith(f"keyrelay: config error: {field}: ")


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[store\nurl=", encoding="utf-8")
    result = invoke(cfg, "keys", "list")
    assert result.exit_code == 2
    assert "invalid TOML" in one_error_line(result.stderr)


@pytest.mark.parametrize(
    "url", ["sqlite:///{tmp}/no/such/dir/k.db", "sqlite:///{tmp}", "sqlite:///{tmp}/k.db?mode=ro"]
)
def test_a_store_that_cannot_be_opened_is_one_line_and_exit_2(tmp_path: Path, url: str) -> None:
    cfg = tmp_path / "k.toml"
    cfg.write_text(f'[store]\nurl = "{url.format(tmp=tmp_path)}"\n', encoding="utf-8")
    for args in (("keys", "list"), ("keys", "add", "--pool", "openai", new_secret()), ("tokens", "list")):
        result = invoke(cfg, *args)
        assert result.exit_code == 2, result.output
        # read-only commands refuse a store that is not there before trying to open it
        assert one_error_line(result.stderr).startswith(("keyrelay: cannot open store sqlite:///", "keyrelay: no store at /"))


def test_a_store_password_is_not_shown(tmp_path: Path) -> None:
    cfg = tmp_path / "k.toml"
    cfg.write_text('[store]\nurl = "redis://:hunter2@127.0.0.1:1/0"\n', encoding="utf-8")
    result = invoke(cfg, "keys", "list")
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert "hunter2" not in line and "redis://:***@127.0.0.1:1/0" in line


def test_a_memory_store_warns_that_nothing_is_kept(tmp_path: Path) -> None:
    cfg = tmp_path / "k.toml"
    cfg.write_text('[store]\nurl = "memory://"\n', encoding="utf-8")
    result = invoke(cfg, "keys", "add", "--pool", "openai", new_secret())
    assert result.exit_code == 0
    assert "warning" in result.stderr and "added 1 key" in result.stdout


def test_config_comes_from_the_group_option_the_subcommand_option_or_the_environment(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    a = new_secret()
    assert invoke(None, "--config", str(cfg), "keys", "add", "--pool", "groq", a).exit_code == 0
    via_env = invoke(None, "keys", "list", "--json", env={"KEYRELAY_CONFIG": str(cfg)})
    assert via_env.exit_code == 0 and [k["masked"] for k in json.loads(via_env.stdout)] == [mask(a)]
    # the sub-command's --config wins over the group's and over the environment
    other = tmp_path / "other"
    other.mkdir()
    other_cfg = make_config(other, pools=("groq",))
    assert invoke(other_cfg, "tokens", "create", "t", "--pool", "groq").exit_code == 0  # makes its store
    result = invoke(None, "--config", str(cfg), "keys", "list", "--json", "--config", str(other_cfg),
                    env={"KEYRELAY_CONFIG": str(cfg)})
    assert result.exit_code == 0 and json.loads(result.stdout) == []


@pytest.mark.parametrize(
    "args",
    [
        ("frobnicate",),
        ("keys", "add", "sk-abcdefghijklmnop"),  # no --pool
        ("keys", "add", "--pool", "openai"),  # no key
        ("keys", "show",),
        ("events", "--limit", "-1"),
        ("tokens", "create"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = invoke(make_config(tmp_path), *args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_version_and_help() -> None:
    result = invoke(None, "--version")
    assert result.exit_code == 0 and result.stdout == f"keyrelay {__version__}\n"
    for args in (("--help",), ("serve", "--help"), ("keys", "import", "--help"), ("tokens", "create", "--help")):
        result = invoke(None, *args)
        assert result.exit_code == 0 and "--config" in result.stdout, args
    assert "--port" in invoke(None, "serve", "--help").stdout


# -- the installed console script ------------------------------------------------------------


def run_script(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYRELAY_")}
    return subprocess.run(
        [*KEYRELAY, *args], cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_console_script_keeps_keys_between_runs_and_sets_exit_codes(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    a, b = new_secret(), new_secret()
    version = run_script("--version", cwd=tmp_path)
    assert (version.returncode, version.stdout) == (0, f"keyrelay {__version__}\n")

    added = run_script("keys", "add", "--config", str(cfg), "--pool", "openai", a, "-", cwd=tmp_path, stdin=b + "\n")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("added 2 keys to pool openai")
    listed = run_script("keys", "list", "--json", "--config", str(cfg), cwd=tmp_path)
    assert listed.returncode == 0
    assert sorted(k["masked"] for k in json.loads(listed.stdout)) == sorted([mask(a), mask(b)])
    assert a not in listed.stdout + added.stdout and b not in listed.stdout + added.stdout

    missing = run_script("keys", "list", "--config", str(tmp_path / "nope.toml"), cwd=tmp_path)
    assert missing.returncode == 2
    assert one_error_line(missing.stderr).endswith("config file not found")
    bad_key = run_script("keys", "add", "--config", str(cfg), "--pool", "openai", "sk-with space-0123456789", cwd=tmp_path)
    assert bad_key.returncode == 2 and "whitespace" in one_error_line(bad_key.stderr)
    usage = run_script("keys", "frob", cwd=tmp_path)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


def test_an_unknown_provider_is_one_config_error_line(tmp_path: Path) -> None:
    cfg = tmp_path / "keyrelay.toml"
    cfg.write_text('[[pools]]\nname = "claude"\nprovider = "anthropix"\n')
    result = invoke(cfg, "keys", "list")
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert "pools[0].provider" in line and "anthropix" in line and "anthropic" in line  # names the known ones
