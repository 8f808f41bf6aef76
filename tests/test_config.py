"""Settings: one TOML file plus the environment, parsed once into frozen values."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from keyrelay.config import (
    DEFAULT_STORE_URL,
    ConfigError,
    PoolSettings,
    Settings,
    load_settings,
    parse_settings,
)

FULL = """
[server]
host = "0.0.0.0"
port = 9000
log_level = "debug"
sync_interval = 0.25
max_connections = 200

[store]
url = "redis://localhost:6379/0"

[[pools]]
name = "openai"
base_url = "https://api.openai.com/v1/"
strategy = "round_robin"

[pools.retry]
max_attempts = 6
deadline = 30.0

[pools.cooling]
default_cooldown = 10.0
max_cooldown = 120.0

[[pools]]
name = "groq-fast"
provider = "openai"
base_url = "https://api.groq.com/openai/v1"
strategy = "least_busy"
default = true

[[tokens]]
name = "ci"
pools = ["openai"]
token = "tok-ci"

[[tokens]]
name = "ops"
pools = ["*"]
sha256 = "ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789"

[[tokens]]
name = "bot"
pools = ["groq-fast", "openai"]
token_env = "BOT_TOKEN"
"""


def write(tmp_path: Path, text: str, name: str = "keyrelay.toml") -> str:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# -- defaults --------------------------------------------------------------------------------


def test_defaults_without_a_file_or_environment() -> None:
    s = load_settings(None, environ={})

    assert (s.server.host, s.server.port) == ("127.0.0.1", 8787)
    assert s.store_url == DEFAULT_STORE_URL == "sqlite:///keyrelay.db"
    assert [p.name for p in s.pools] == ["openai"]
    assert s.default_pool.name == "openai"
    assert s.default_pool.provider == "openai"
    assert s.default_pool.base_url == "https://api.openai.com/v1"
    assert s.default_pool.strategy == "random"
    assert s.tokens == ()
    assert s.source == ""


def test_settings_built_in_code_match_the_parsed_defaults() -> None:
    assert Settings() == load_settings(None, environ={})


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    s = load_settings(path, environ={})
    # the default store's relative path is taken from the file's directory
    assert s == dataclasses.replace(Settings(), source=path, store_url=f"sqlite:///{tmp_path / 'keyrelay.db'}")


# -- a full file -----------------------------------------------------------------------------


def test_a_full_file_is_read_into_settings(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)

    s = load_settings(path, environ={"BOT_TOKEN": "tok-bot"})

    assert s.source == path
    assert (s.server.host, s.server.port, s.server.log_level) == ("0.0.0.0", 9000, "debug")
    assert s.server.sync_interval == 0.25 and s.server.max_connections == 200
    assert s.store_url == "redis://localhost:6379/0"
    openai, groq = s.pools
    assert openai.base_url == "https://api.openai.com/v1"  # trailing slash dropped
    assert openai.strategy == "round_robin"
    assert (openai.retry.max_attempts, openai.retry.deadline) == (6, 30.0)
    assert (openai.cooling.default_cooldown, openai.cooling.max_cooldown) == (10.0, 120.0)
    assert openai.cooling.exhausted_recheck == 6 * 3600.0  # untouched fields keep their default
    assert groq.name == "groq-fast" and groq.strategy == "least_busy"
    assert s.default_pool is groq
    assert s.pool("openai") is openai
    with pytest.raises(KeyError):
        s.pool("missing")
    ci, ops, bot = s.tokens
    assert (ci.name, ci.pools, ci.token_hash) == ("ci", ("openai",), sha("tok-ci"))
    assert ops.pools == ("*",) and ops.token_hash == ops.token_hash.lower()
    assert bot.pools == ("groq-fast", "openai") and bot.token_hash == sha("tok-bot")


def test_token_hashes_are_not_shown(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, FULL), environ={"BOT_TOKEN": "tok-bot"})
    assert sha("tok-ci") not in repr(s)


def test_the_default_pool_is_the_first_unless_one_is_marked() -> None:
    doc = {"pools": [{"name": "a"}, {"name": "b"}]}
    assert parse_settings(doc, {}).default_pool.name == "a"

    doc = {"pools": [{"name": "a"}, {"name": "b", "default": True}]}
    assert parse_settings(doc, {}).default_pool.name == "b"


# -- environment -----------------------------------------------------------------------------


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    environ = {
        "KEYRELAY_HOST": "10.0.0.5",
        "KEYRELAY_PORT": "9999",
        "KEYRELAY_STORE_URL": "memory://",
        "KEYRELAY_POOL_GROQ_FAST_BASE_URL": "http://localhost:8000/v1/",
        "BOT_TOKEN": "tok-bot",
    }

    s = load_settings(write(tmp_path, FULL), environ=environ)

    assert (s.server.host, s.server.port) == ("10.0.0.5", 9999)
    assert s.store_url == "memory://"
    assert s.pool("groq-fast").base_url == "http://localhost:8000/v1"
    assert s.pool("openai").base_url == "https://api.openai.com/v1"


def test_environment_overrides_the_defaults() -> None:
    s = load_settings(None, environ={"KEYRELAY_PORT": "8080", "KEYRELAY_POOL_OPENAI_BASE_URL": "http://mock:1234/v1"})
    assert s.server.port == 8080
    assert s.default_pool.base_url == "http://mock:1234/v1"


def test_empty_environment_values_are_ignored() -> None:
    s = load_settings(None, environ={"KEYRELAY_HOST": "", "KEYRELAY_STORE_URL": ""})
    assert s == Settings()


def test_keyrelay_config_names_the_file_when_no_path_is_given(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 7000\n")

    s = load_settings(None, environ={"KEYRELAY_CONFIG": path})

    assert s.server.port == 7000 and s.source == path


def test_an_explicit_path_wins_over_keyrelay_config(tmp_path: Path) -> None:
    mine = write(tmp_path, "[server]\nport = 7001\n", "mine.toml")
    theirs = write(tmp_path, "[server]\nport = 7002\n", "theirs.toml")

    assert load_settings(mine, environ={"KEYRELAY_CONFIG": theirs}).server.port == 7001


# -- frozen ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "field"),
    [
        (lambda s: s, "store_url"),
        (lambda s: s.server, "port"),
        (lambda s: s.pools[0], "base_url"),
        (lambda s: s.pools[0].retry, "max_attempts"),
        (lambda s: s.pools[0].cooling, "max_cooldown"),
        (lambda s: s.tokens[0], "pools"),
    ],
    ids=["settings", "server", "pool", "retry", "cooling", "token"],
)
def test_settings_are_frozen(tmp_path: Path, target: object, field: str) -> None:
    s = load_settings(write(tmp_path, FULL), environ={"BOT_TOKEN": "tok-bot"})
    obj = target(s)  # type: ignore[operator]

    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, field, None)


def test_collections_in_settings_are_immutable(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, FULL), environ={"BOT_TOKEN": "tok-bot"})
    assert isinstance(s.pools, tuple)
    assert isinstance(s.tokens, tuple)
    assert all(isinstance(t.pools, tuple) for t in s.tokens)
    assert isinstance(s.pools[0], PoolSettings)


# -- the secret of keys at rest ----------------------------------------------------------------


def test_the_secret_comes_from_the_environment_and_is_never_shown() -> None:
    value, pending = "s" * 40, "n" * 43
    settings = parse_settings({}, {"KEYRELAY_SECRET_KEY": value, "KEYRELAY_NEW_SECRET_KEY": pending})
    assert (settings.secret.value, settings.secret.pending, settings.secret.file) == (value, pending, None)
    assert value not in repr(settings) and pending not in repr(settings)


@pytest.mark.parametrize("var", ["KEYRELAY_SECRET_KEY", "KEYRELAY_NEW_SECRET_KEY"])
@pytest.mark.parametrize("value", ["too-short", " " + "x" * 40, "x" * 40 + "\n"])
def test_a_weak_or_mangled_secret_is_refused_without_echoing_it(var: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{var}: must be at least 32 printable characters") as caught:
        parse_settings({}, {var: value})
    assert value.strip() not in str(caught.value)


def test_the_key_file_is_relative_to_the_settings_file(tmp_path: Path) -> None:
    conf = tmp_path / "conf" / "keyrelay.toml"
    conf.parent.mkdir()
    conf.write_text('[store]\nurl = "sqlite:///k.db"\nsecret_file = "secrets/k.key"\n')
    assert load_settings(str(conf), {}).secret.file == str(tmp_path / "conf" / "secrets" / "k.key")
    conf.write_text('[store]\nurl = "sqlite:///k.db"\n')
    assert load_settings(str(conf), {}).secret.file is None  # the SQLite store's default: <file>.key
    conf.write_text('[store]\nurl = "redis://127.0.0.1:6379/0"\n')
    assert load_settings(str(conf), {}).secret.file is None  # Redis: redis.key in the user's data dir
    with pytest.raises(ConfigError, match="store.secret_file"):
        parse_settings({"store": {"secret_file": 3}}, {})


@pytest.mark.parametrize(
    ("provider", "url"),
    [
        ("anthropic", "https://api.anthropic.com"),
        ("gemini", "https://generativelanguage.googleapis.com"),
        ("openai", "https://api.openai.com/v1"),
    ],
)
def test_each_provider_has_its_own_default_base_url(provider: str, url: str) -> None:
    s = parse_settings({"pools": [{"name": "p", "provider": provider}]}, {})
    assert s.default_pool.base_url == url
