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
