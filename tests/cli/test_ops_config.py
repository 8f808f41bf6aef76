"""``[metrics]`` and ``[[alerts]]`` mistakes: one line naming the field, exit code 2, and a
webhook URL (a secret, for Slack) never shown whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyrelay.config import ConfigError, parse_settings

from . import invoke, make_config
from .test_errors import one_error_line


@pytest.mark.parametrize(
    ("extra", "field", "says"),
    [
        ('[[alerts]]\nurl = "hooks.example.com/x"\n', "alerts[0].url", "expected an http(s) URL"),
        ('[[alerts]]\nurl = "ftp://hooks.example.com/T0/SECRETPATH"\n', "alerts[0].url", "ftp://hooks.example.com/…"),
        ('[[alerts]]\nurl = "https://h.example.com/x"\non = ["key_died"]\n', "alerts[0].on", "unknown event 'key_died'"),
        ('[[alerts]]\nurl = "https://h.example.com/x"\nkind = "teams"\n', "alerts[0].kind", "unknown kind 'teams'"),
        ('[[alerts]]\nurl = "https://h.example.com/x"\npools = ["nope"]\n', "alerts[0].pools", "no pool named 'nope'"),
        ('[[alerts]]\nurl = "https://h.example.com/x"\nthreshold = 0\n', "alerts[0].threshold", "at least 1"),
        ('[[alerts]]\nurl = "https://h.example.com/x"\nwhen = 1\n', "alerts[0].when", "unknown field"),
        ('[[alerts]]\nkind = "slack"\n', "alerts[0]", "give exactly one of url or url_env"),
        ('[[alerts]]\nurl_env = "NO_SUCH_HOOK_VAR"\n', "alerts[0].url_env", "NO_SUCH_HOOK_VAR is not set"),
        ('[alerts]\nurl = "https://h.example.com/x"\n', "alerts", "array of tables"),
        ('[metrics]\nenabled = "sometimes"\n', "metrics.enabled", "expected true or false"),
        ('[metrics]\npath = "/m"\n', "metrics.path", "unknown field"),
    ],
)
def test_alert_and_metrics_mistakes_are_one_line_and_exit_2(tmp_path: Path, extra: str, field: str, says: str) -> None:
    cfg = make_config(tmp_path, extra=extra)
    result = invoke(cfg, "keys", "list")
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert line.startswith(f"keyrelay: config error: {field}: ") and says in line, line
    assert "SECRETPATH" not in line


def test_alerts_from_the_config_and_the_environment() -> None:
    doc = {"alerts": [
        {"url": "https://hooks.slack.com/services/T0/B0/x", "kind": "slack", "on": ["pool_low"], "threshold": 3},
        {"url_env": "HOOK"},
    ]}
    s = parse_settings(doc, {"HOOK": "http://127.0.0.1:9000/hook"})
    slack, generic = s.alerts
    assert slack.kind == "slack" and slack.on == ("pool_low",) and slack.threshold == 3 and slack.pools == ()
    assert generic.url == "http://127.0.0.1:9000/hook" and generic.kind == "json"
    assert generic.on == ("key_retired", "pool_low", "guard_tripped")
    assert "hooks.slack.com" not in repr(s)  # the URL is kept out of reprs (it is the webhook's secret)
    assert s.metrics.enabled and not s.metrics.require_admin
    with pytest.raises(ConfigError):
        parse_settings({"alerts": [{"url": "https://x.example.com", "retries": -1}]}, {})
