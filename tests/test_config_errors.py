"""Settings errors: every one is a :class:`~keyrelay.exceptions.ConfigError` naming the field at
fault (and the file), never echoing a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyrelay.config import ConfigError, load_settings, parse_settings


def write(tmp_path: Path, text: str, name: str = "keyrelay.toml") -> str:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


# -- every error names its field -------------------------------------------------------------

ERRORS: dict[str, tuple[dict[str, object], dict[str, str], str, str]] = {
    # id: (document, environ, where, a word of the problem)
    "unknown strategy": ({"pools": [{"name": "a", "strategy": "fastest"}]}, {}, "pools[0].strategy", "fastest"),
    "unknown provider": ({"pools": [{"name": "a", "provider": "bard"}]}, {}, "pools[0].provider", "bard"),
    "azure without its resource endpoint": ({"pools": [{"name": "a", "provider": "azure"}]}, {}, "pools[0].base_url", "azure"),
    "provider not a name": ({"pools": [{"name": "a", "provider": 3}]}, {}, "pools[0].provider", "3"),
    "base_url not http": ({"pools": [{"name": "a", "base_url": "ftp://x/v1"}]}, {}, "pools[0].base_url", "ftp://x/v1"),
    "base_url without a host": ({"pools": [{"name": "a", "base_url": "https://"}]}, {}, "pools[0].base_url", "URL"),
    "base_url from the environment": (
        {"pools": [{"name": "a"}]},
        {"KEYRELAY_POOL_A_BASE_URL": "localhost:8000"},
        "pools[0].base_url",
        "localhost:8000",
    ),
    "port zero": ({"server": {"port": 0}}, {}, "server.port", "between 1 and 65535"),
    "port too high": ({"server": {"port": 65536}}, {}, "server.port", "between 1 and 65535"),
    "port negative": ({"server": {"port": -1}}, {}, "server.port", "negative"),
    "port from the environment out of range": ({}, {"KEYRELAY_PORT": "70000"}, "server.port", "70000"),
    "port a word": ({"server": {"port": "eighty"}}, {}, "server.port", "integer"),
    "port from the environment not a number": ({}, {"KEYRELAY_PORT": "http"}, "server.port", "integer"),
    "port a fraction": ({"server": {"port": 8080.5}}, {}, "server.port", "integer"),
    "port a boolean": ({"server": {"port": True}}, {}, "server.port", "integer"),
    "unknown server field": ({"server": {"hots": "x"}}, {}, "server.hots", "unknown field"),
    "bad log level": ({"server": {"log_level": "loud"}}, {}, "server.log_level", "loud"),
    "unknown field in a pool": ({"pools": [{"name": "a", "stratgy": "random"}]}, {}, "pools[0].stratgy", "unknown"),
    "unknown field in the second pool": (
        {"pools": [{"name": "a"}, {"name": "b", "weight": 2}]},
        {},
        "pools[1].weight",
        "unknown",
    ),
    "unknown retry field": ({"pools": [{"name": "a", "retry": {"tries": 3}}]}, {}, "pools[0].retry.tries", "unknown"),
    "invalid retry value": (
        {"pools": [{"name": "a", "retry": {"max_attempts": 0}}]},
        {},
        "pools[0].retry",
        "max_attempts",
    ),
    "cooling not a number": (
        {"pools": [{"name": "a", "cooling": {"max_cooldown": "long"}}]},
        {},
        "pools[0].cooling.max_cooldown",
        "number",
    ),
    "unknown section": ({"sever": {"port": 1}}, {}, "sever", "unknown section"),
    "unknown store field": ({"store": {"uri": "memory://"}}, {}, "store.uri", "unknown"),
    "unknown store scheme": ({"store": {"url": "postgres://db"}}, {}, "store.url", "postgres://db"),
    "duplicate pool names": ({"pools": [{"name": "a"}, {"name": "a"}]}, {}, "pools", "'a' appears twice"),
    "two default pools": (
        {"pools": [{"name": "a", "default": True}, {"name": "b", "default": True}]},
        {},
        "pools",
        "more than one",
    ),
    "empty pools": ({"pools": []}, {}, "pools", "non-empty"),
    "pool without a name": ({"pools": [{"strategy": "random"}]}, {}, "pools[0].name", "required"),
    "pool name with a space": ({"pools": [{"name": "my pool"}]}, {}, "pools[0].name", "letters"),
    "reserved pool name v1": ({"pools": [{"name": "v1"}]}, {}, "pools[0].name", "reserved"),
    "reserved pool name admin": ({"pools": [{"name": "admin"}]}, {}, "pools[0].name", "reserved"),
    "token with unknown pool": (
        {"pools": [{"name": "a"}], "tokens": [{"name": "t", "pools": ["b"], "token": "x"}]},
        {},
        "tokens[0].pools",
        "'b'",
    ),
    "token with no pools": ({"tokens": [{"name": "t", "pools": [], "token": "x"}]}, {}, "tokens[0].pools", "required"),
    "token without a name": ({"tokens": [{"pools": ["*"], "token": "x"}]}, {}, "tokens[0].name", "required"),
    "token given both sha256 and token": (
        {"tokens": [{"name": "t", "pools": ["*"], "token": "x", "sha256": "0" * 64}]},
        {},
        "tokens[0]",
        "exactly one of sha256, token or token_env",
    ),
    "token given no secret": ({"tokens": [{"name": "t", "pools": ["*"]}]}, {}, "tokens[0]", "exactly one"),
    "token sha256 not hex": (
        {"tokens": [{"name": "t", "pools": ["*"], "sha256": "xyz"}]},
        {},
        "tokens[0].sha256",
        "64 hex digits",
    ),
    "token_env missing var": (
        {"tokens": [{"name": "t", "pools": ["*"], "token_env": "CI_TOKEN"}]},
        {},
        "tokens[0].token_env",
        "CI_TOKEN",
    ),
    "token_env set but empty": (
        {"tokens": [{"name": "t", "pools": ["*"], "token_env": "CI_TOKEN"}]},
        {"CI_TOKEN": ""},
        "tokens[0].token_env",
        "CI_TOKEN",
    ),
    "unknown token field": (
        {"tokens": [{"name": "t", "pools": ["*"], "token": "x", "admin": True}]},
        {},
        "tokens[0].admin",
        "unknown",
    ),
    "tokens not an array": ({"tokens": {"name": "t"}}, {}, "tokens", "array"),
    "server not a table": ({"server": 3}, {}, "server", "table"),
}


@pytest.mark.parametrize(("doc", "environ", "where", "problem"), ERRORS.values(), ids=ERRORS.keys())
def test_every_error_names_its_field(doc: dict[str, object], environ: dict[str, str], where: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(doc, environ)

    err = info.value
    assert err.where == where
    assert problem in err.problem
    assert str(err).startswith(f"{where}: ")


def test_a_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_a_token_given_in_the_file_never_appears_in_errors() -> None:
    doc = {"tokens": [{"name": "t", "pools": ["nope"], "token": "super-secret-token"}]}
    with pytest.raises(ConfigError) as info:
        parse_settings(doc, {})
    assert "super-secret-token" not in str(info.value)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[server\nport = 1\n")

    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})

    assert info.value.where == path
    assert "invalid TOML" in info.value.problem


def test_a_missing_file_names_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.toml")

    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})

    assert info.value.where == path
    assert "not found" in info.value.problem


def test_a_missing_file_from_keyrelay_config_names_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "gone.toml")
    with pytest.raises(ConfigError, match="gone.toml: config file not found"):
        load_settings(None, environ={"KEYRELAY_CONFIG": path})


def test_errors_in_a_file_name_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, '[[pools]]\nname = "a"\nstrategy = "fastest"\n')

    with pytest.raises(ConfigError, match=r"^pools\[0\]\.strategy: unknown strategy 'fastest' \(choose from"):
        load_settings(path, environ={})
