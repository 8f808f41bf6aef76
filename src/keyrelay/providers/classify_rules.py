"""Rows of the OpenAI-compatible classification table that read what an answer *says* rather
than its status: money, overload, region, moderation, a model one key may not use, and the bad
keys that can be recognised for sure. ``providers/openai.py`` splices them into
:data:`~keyrelay.providers.openai.RULES` at the points where they must win.

Each row is pinned by a real body in ``tests/fixtures/`` (sources next to each). Codes and types
are matched lower-cased; messages are lower-case substrings. Money is matched on the provider's
code where it has one, else on words — never on a bare "balance" ("load balancer") nor on
"billing" (rate-limit answers link to billing pages: Groq, Together). Pure data.
"""

from __future__ import annotations

from keyrelay.core.machine import UNVERIFIED
from keyrelay.providers.base import Rule

__all__ = [
    "IN_BODY_STATUS",
    "KEY_RULES",
    "LOOKALIKE_RATE_RULES",
    "MODEL_ACCESS",
    "MONEY_BEFORE_KEY_RULES",
    "MONEY_CODES",
    "MONEY_CODE_RULES",
    "MONEY_WORD_RULES",
    "NOT_THE_KEY_RULES",
    "OVERLOAD_RULES",
    "UNVERIFIED",
    "VERIFY_RULES",
]

_F = frozenset

#: the reason of a client error that says this key may not use the requested model
MODEL_ACCESS = "model not available to this key"

#: statuses money answers come with (DeepSeek 402, Moonshot 403/429, Zhipu 429, DashScope 400,
#: Volcengine 403, LiteLLM 400/422/429, SiliconFlow 403, new-api 401/403, xAI 403/429, …)
_MONEY_STATUSES = _F({400, 401, 402, 403, 412, 422, 429})

#: provider codes (or error types) that mean "the account cannot pay", lower-cased
MONEY_CODES = _F(
    {
        "arrearage",  # DashScope: "Access denied, please make sure your account is in good standing."
        "accountoverdueerror",  # Volcengine Ark: "your account has an overdue balance"
        "1113",  # Zhipu: 余额不足或无可用资源包 / 您的账户已欠费
        "exceeded_current_quota_error",  # Moonshot (its ``type``)
        "budget_exceeded",  # LiteLLM proxy (its ``type``)
        "insufficient_balance",  # sub2api and other relays
        "allocationquota.freetieronly",  # DashScope: free tier spent, paid use switched off
        "30001",  # SiliconFlow: account balance insufficient
        "30011",  # SiliconFlow: the model needs paid balance, which is insufficient
        "insufficient_credits",
        "quotaexceeded",  # Volcengine Ark: the account's free quota is used up
    }
)

MONEY_CODE_RULES: tuple[Rule, ...] = (
    Rule("quota_exhausted", "account cannot pay", _MONEY_STATUSES, either=MONEY_CODES),
    # Zhipu: today's call quota (1304), the 5-hour / weekly caps of a plan (1308, 1310): spent
    # until a stated time hours away, not a short rest
    Rule("quota_exhausted", "limit reached for hours", _F({429}), either=_F({"1304", "1308", "1310"})),
)

#: a money-sounding answer that is a short rate limit (must come before the money rows)
LOOKALIKE_RATE_RULES: tuple[Rule, ...] = (
    # DashScope compatible mode words its per-minute token throttle as OpenAI's spent quota,
    # with type insufficient_quota, but links to its token-limit (rate limit) doc
    Rule("rate_limited", "per-minute quota", _F({429}), message=("error-code#token-limit", "error-code#rate-limit")),
    Rule("rate_limited", "rate limited", _F({429}), codes=_F({"throttling", "throttling.ratequota",
                                                              "throttling.allocationquota", "throttling.burstrate",
                                                              "limit_requests"})),
    # Together: a free account's request rate, typed credit_limit
    Rule("rate_limited", "rate limited", _F({429}), types=_F({"credit_limit"}), message=("rate limit",)),
    # Cerebras: per-minute/per-hour "quota" codes are request-rate limits
    Rule("rate_limited", "rate limited", _F({429}), codes=_F({"request_quota_exceeded", "token_quota_exceeded"}),
         message=("per minute", "per hour")),
)

#: money words strong enough to win over bad-key words in the same answer ("account suspended
#: due to non-payment" is spent, not revoked); placed just before :data:`KEY_RULES`
MONEY_BEFORE_KEY_RULES: tuple[Rule, ...] = (
    Rule(
        "quota_exhausted",
        "account suspended for non-payment",
        _MONEY_STATUSES,
        message=("non-payment", "nonpayment", "past invoices", "unpaid", "overdue", "arrears", "欠费"),
    ),
)

#: spent money in words, for providers without a code (after every code-based row)
MONEY_WORD_RULES: tuple[Rule, ...] = (
    Rule(
        "quota_exhausted",
        "balance or credit spent",
        _MONEY_STATUSES,
        message=(
            "insufficient balance",
            "balance is insufficient",
            "balance is too low",
            "balance insufficient",
            "not enough balance",
            "insufficient account balance",
            "insufficient credit",
            "insufficient funds",
            "credit balance",
            "no credits remaining",
            "out of credits",
            "run out of credits",
            "used all available credits",
            "requires more credits",
            "credit limit exceeded",
            "exceeded current quota",
            "paid balance",
            "overdue",
            "arrears",
            "arrearage",
            "in good standing",
            "please recharge",
            "free tier of the model has been exhausted",
            "余额不足",
            "欠费",
            "账户余额",
            "额度不足",
            "额度已用尽",
            "配额已用尽",
            "配额不足",
            "资源包",
            "请充值",
        ),
    ),
    Rule(
        "quota_exhausted",
        "spend limit reached",
        _MONEY_STATUSES,
        message=(
            "spending limit",
            "spend limit",
            "budget has been exceeded",
            "exceeded budget",
            "exceededbudget",
            "over budget",
            "billing hard limit",
            "api usage limit",
            "payment required",
            "suspended for non-payment",
            "suspended due to non-payment",
            "set inference limit",
            "out of call volume quota",  # Azure API Management quota policy (403)
            "out of token quota",
        ),
    ),
    # Cerebras words a spent day "Tokens per day limit exceeded" (Groq's "(TPD)" is in openai.py),
    # Moonshot "reached organization TPD rate limit"
    Rule("quota_exhausted", "daily limit reached", _F({429}),
         message=("per day limit exceeded", "tokens per day limit", "requests per day limit", "tpd rate limit",
                  "今日调用次数限额")),
    # OpenAI's spent-quota type from a relay that answers it with another status (400, 403)
    Rule("quota_exhausted", "quota exhausted", _MONEY_STATUSES, either=_F({"insufficient_quota"}),
         message=("exceeded your current quota", "quota", "额度")),
)

#: not the key: the egress's region, the request's content, a model this key may not use
NOT_THE_KEY_RULES: tuple[Rule, ...] = (
    Rule("upstream_fault", "region not supported", _F({403, 451}), either=_F({"regionerror"})),
    Rule(
        "upstream_fault",
        "region not supported",
        _F({403, 451}),
        message=(
            "not available in your region",
            "not available in your country",
            "not supported in your region",
            "unsupported countries",
            "unsupported region",
            "region is not supported",
            "request not allowed",  # Anthropic from an unsupported country (403, type forbidden)
        ),
    ),
    Rule("upstream_fault", "blocked by network rules", _F({403}),
         message=("virtual network/firewall rules", "firewall rules", "ip address is not allowed")),
    Rule(
        "client_error",
        "content refused",
        _F({400, 403, 422, 451}),
        either=_F(
            {
                "content_filter",
                "content_policy_violation",
                "moderation_blocked",
                "data_inspection_failed",
                "datainspectionfailed",
                "1301",  # Zhipu: unsafe or sensitive content
                "sensitivecontentdetected",
                "inputtextsensitivecontentdetected",
                "outputtextsensitivecontentdetected",
            }
        ),
    ),
    Rule(
        "client_error",
        "content refused",
        _F({400, 403, 422, 451}),
        message=(
            "flagged",
            "content violates",
            "content management policy",
            "content policy",
            "usage policy",
            "usage guidelines",
            "content exists risk",
            "inappropriate content",
            "safety reasons",
            "不安全",
            "敏感",
        ),
    ),
    # OpenAI: a model (or streaming it) needs a verified organization — another key's may be
    Rule("client_error", MODEL_ACCESS, _F({400, 403}), message=("organization must be verified to",)),
    # the client sent an OpenAI-Organization header that is not the key's: the request's fault
    Rule("client_error", "organization header mismatch", _F({401}), codes=_F({"mismatched_organization"})),
    Rule("client_error", MODEL_ACCESS, _F({403, 404}),
         codes=_F({"model_not_found", "modelnotopen", "accessdenied.unpurchased", "invalidendpointormodel.notfound",
                    "deploymentnotfound"})),
    Rule(
        "client_error",
        MODEL_ACCESS,
        _F({401, 403, 404}),
        message=(
            "does not have access to model",
            "do not have access to it",
            "does not have access to it",
            "inaccessible, and/or not deployed",
            "无权访问模型",
            "not allowed to sample from this model",
            "the caller does not have permission",
            "has not activated the model",
            "无权使用模型",
        ),
    ),
)

#: bad keys recognised for sure (retired at once); anything else on 401/403 is verified first
KEY_RULES: tuple[Rule, ...] = (
    Rule(
        "invalid_key",
        "invalid api key",
        _F({401, 403}),
        either=_F(
            {
                "invalid_api_key",
                "invalidapikey",  # DashScope
                "authentication_error",  # DeepSeek, Anthropic
                "invalid_authentication_error",  # Moonshot
                "authenticationerror",  # Volcengine Ark
                "authenticationtypedisabled",  # Azure: key auth turned off on the resource
                "consumer_suspended",  # Gemini (google.rpc ErrorInfo reason)
                "api_key_service_blocked",
                "api_key_invalid",
                "1000",  # Zhipu: 身份验证失败
                "1002",  # Zhipu: Authorization Token 非法
                "1003",  # Zhipu: Token 已过期
                "token_not_found_in_db",  # LiteLLM proxy
                "wrong_api_key",  # Cerebras
                "token_invalidated",
                "service_disabled",  # Gemini: the key's project has the API turned off
                "api_key_ip_address_blocked",
                "api_key_http_referrer_blocked",
            }
        ),
    ),
    Rule(
        "invalid_key",
        "invalid api key",
        _F({401, 403}),
        message=(
            "incorrect api key",
            "invalid api key",
            "invalid api-key",
            "api key not valid",
            "invalid x-api-key",
            "invalid authentication",
            "authentication fails",
            "invalid subscription key",
            "no auth credentials",
            "user not found",
            "api key expired",
            "reported as leaked",
            "has been suspended",
            "has been banned",
            "key is disabled",
            "key has been disabled",
            "key has been revoked",
            "无效的令牌",
            "令牌已过期",
            "令牌状态不可用",
            "用户已被封禁",
            "身份验证失败",
            "invalid proxy server token",  # a LiteLLM proxy's unknown virtual key
            "provide an api key",
            "wrong api key",
            "api key you provided is invalid",
            "invalid token",
            "has been invalidated",
            "key is blocked",
            "account has been disabled",
            "organization has been disabled",
        ),
    ),
    # Mistral's {"message":"Unauthorized"} / {"detail":"Unauthorized"}: the word is the verdict
    Rule("invalid_key", "unauthorized", _F({401}), message=("unauthorized",)),
    # a bad key some providers answer with 400 (xAI "Incorrect API key provided", LiteLLM's
    # "Authentication Error - Expired Key")
    Rule("invalid_key", "invalid api key", _F({400}),
         message=("incorrect api key provided", "invalid api key provided", "expired key")),
)

#: an auth refusal no row recognised: set the key aside briefly and let a probe decide
VERIFY_RULES: tuple[Rule, ...] = (Rule("rate_limited", UNVERIFIED, _F({401, 403})),)

#: overload on 429 (or 5xx): the provider's, not the key's — never a cooldown of one key
OVERLOAD_RULES: tuple[Rule, ...] = (
    Rule(
        "upstream_fault",
        "upstream overloaded",
        _F({429, *range(500, 600)}),
        either=_F({"engine_overloaded_error", "server_is_overloaded", "serveroverloaded", "overloaded_error",
                   "1305", "modelserviceunavailable", "queue_exceeded"}),
    ),
    Rule(
        "upstream_fault",
        "upstream overloaded",
        _F({429}),
        message=(
            "overloaded",
            "server is busy",
            "service is busy",
            "too busy",
            "at capacity",
            "no capacity",
            "insufficient capacity",
            "temporarily rate-limited upstream",
            "high traffic",
            "no deployments available",  # a LiteLLM router with every deployment cooling
            "服务器繁忙",
            "系统繁忙",
            "访问量过大",
            "负载过高",
        ),
    ),
)

#: the HTTP status a code (or type) found inside a 200 answer or a stream event stands for, so
#: an in-stream error is read like the same error sent with its status
IN_BODY_STATUS: dict[str, int] = {
    **dict.fromkeys(MONEY_CODES, 402),
    **dict.fromkeys(
        ("content_filter", "content_policy_violation", "moderation_blocked", "data_inspection_failed",
         "datainspectionfailed", "1301", "sensitivecontentdetected"),
        400,
    ),
    **dict.fromkeys(("engine_overloaded_error", "server_is_overloaded", "serveroverloaded", "overloaded_error",
                     "1305"), 503),
    **dict.fromkeys(("authentication_error", "invalid_authentication_error", "authenticationerror",
                     "invalidapikey"), 401),
}
