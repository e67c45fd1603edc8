"""The leak corpus: secrets of every common shape, the positions a workflow can put them
in, and a scanner that finds any of them again in any bytes.

An **entry** is one shape of secret: an OpenAI key in a sentence, a password under
``DBPassword``, a PEM block, a URL with a password... It is either

- ``keyed``: its value sits under a secret-looking key (``{"DBPassword": value}``,
  a keyword argument, a header pair, a model field); in free text it reads as
  ``key=value``, ``key: value``, ``key="value"`` or ``"key": "value"`` (its style); or
- ``embedded``: it is part of a text (``"connecting to postgresql://app:PW@db/x"``); in
  a structure that text sits under a neutral key (``note``).

Each entry names its **secret**: the substring that must not appear anywhere. For a
keyed entry it is the whole value, except where the value wraps it (``Authorization:
Bearer T`` and ``DATABASE_URL: postgresql://app:PW@db/app``: ``T`` and ``PW``). For an
embedded entry it is the key, token or password in the text: a URL's password or
token, a PEM block's body lines, a whole JWT, the ``hunter2…`` of ``password=hunter2…``.

A **placement** is an entry at one position in one run. Every placement is generated
afresh (random characters from a seeded generator), so each is a distinct value and a
hit names the entry, the position and the run. The random runs of characters in a
secret (at least 10 of an alphabet of 16 or more) are its **fragments**: they survive
any escaping (JSON, CSV, COPY, URL quoting, protobuf), so a secret that is cut,
half-redacted or escaped in a way the scanner does not spell out is still found.

A **position** is where the workflow puts a placement (a step argument, a log
message, an LLM message, a foreign span's attribute…); ``leak_app.py`` is the
workflow that puts each one there. The scanner reports, per place searched, which
placements it found: whole (the secret in one of its spellings) or a fragment.
"""

from __future__ import annotations

import json
import random
import re
import string
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import ahocorasick_rs

ALNUM = string.ascii_letters + string.digits
UPPER_NUM = string.ascii_uppercase + string.digits
LETTERS = string.ascii_letters
HEX = "0123456789abcdef"
FRAGMENT_MIN = 10
"""Random runs at least this long (of a 16+ symbol alphabet) are searched for alone."""


class Gen:
    """Random characters for one placement; keeps the runs it made (the fragments)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.fragments: list[str] = []

    def r(self, n: int, alphabet: str = ALNUM) -> str:
        text = "".join(self.rng.choices(alphabet, k=n))
        if n >= FRAGMENT_MIN and len(alphabet) >= 16:
            self.fragments.append(text)
        return text

    def digits(self, n: int) -> str:
        """Digits only: too plain to search for alone (timestamps are digits too)."""
        return "".join(self.rng.choices(string.digits, k=n))


Make = Callable[[Gen], str]
"""Makes an entry's secret."""


@dataclass(frozen=True)
class Entry:
    id: str
    cls: str
    """The class the leak table groups entries by."""
    secret: Make
    key: str | None = None
    """``keyed`` entries: the key the value sits under."""
    template: str = "{s}"
    """The value (keyed) or the text (embedded) around the secret ``{s}``."""
    style: str = "="
    """How a keyed entry reads in free text: ``=``, ``:``, ``="`` or ``json``."""

    @property
    def mode(self) -> str:
        return "embedded" if self.key is None else "keyed"


# --- secret makers ----------------------------------------------------------------------


def low_entropy(i: int) -> Make:
    """Passwords people choose: words, a marker; spaces, symbols, non-ASCII."""
    shapes: list[Make] = [
        lambda g: f"hunter2-{g.r(12)}",
        lambda g: f"P@ss w0rd {g.r(12)}!",
        lambda g: f"correct-horse-{g.r(12)}",
        lambda g: f"pässwörd-{g.r(12)}",
        lambda g: f"Summer2024{g.r(12)}",
    ]
    return shapes[i % len(shapes)]


def opaque(n: int = 32, alphabet: str = ALNUM) -> Make:
    return lambda g: g.r(n, alphabet)


def aws_secret(g: Gen) -> str:
    return f"{g.r(12)}/{g.r(13)}+{g.r(13)}"  # 40 base64 characters


def azure_account_key(g: Gen) -> str:
    return f"{g.r(40)}+{g.r(24)}/{g.r(20)}=="  # 88 base64 characters


def jwt(g: Gen) -> str:
    return f"eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJ{g.r(60)}.{g.r(20)}-{g.r(22)}"


def pem(kind: str) -> Make:
    def make(g: Gen) -> str:
        lines = [f"{g.r(30)}+{g.r(16)}/{g.r(16)}" for _ in range(7)] + [f"{g.r(20)}=="]
        label = f"{kind} PRIVATE KEY".strip()
        return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"])

    return make


def url_password(g: Gen) -> str:
    return f"{g.r(14)}-{g.r(10)}"


def basic_credentials(g: Gen) -> str:
    import base64

    password = "".join(g.rng.choices(ALNUM, k=18))
    encoded = base64.b64encode(f"svc-deploy:{password}".encode()).decode()
    # the encoded password: past the 16 characters that encode "svc-deploy:" and one more
    g.fragments.extend(re.findall(rf"[A-Za-z0-9]{{{FRAGMENT_MIN},}}", encoded[16:]))
    return encoded


# --- the corpus -----------------------------------------------------------------------

PROVIDER = "provider key in text"
PROVIDER_KEYED = "provider key under a key"
JWT = "JWT"
PEM = "PEM private key"
URL = "URL credential"
TEXT = "name=value in text"
LOW = "low-entropy under a secret key"
HIGH = "high-entropy under a secret key"

_SAY = "the job uses {s} for its calls"

ENTRIES: tuple[Entry, ...] = (
    # provider keys in free text
    Entry("openai-sk", PROVIDER, lambda g: f"sk-{g.r(48)}", template=_SAY),
    Entry(
        "openai-sk-proj",
        PROVIDER,
        lambda g: f"sk-proj-{g.r(24)}-{g.r(24)}_{g.r(20)}",
        template="export OPENAI_API_KEY={s}",
    ),
    Entry("openai-sk-svcacct", PROVIDER, lambda g: f"sk-svcacct-{g.r(40)}", template=_SAY),
    Entry("openai-sk-admin", PROVIDER, lambda g: f"sk-admin-{g.r(40)}", template=_SAY),
    Entry(
        "anthropic-api03",
        PROVIDER,
        lambda g: f"sk-ant-api03-{g.r(40)}-{g.r(30)}_{g.r(23)}AA",
        template="client = Anthropic(api_key='{s}')",
    ),
    Entry("anthropic-admin01", PROVIDER, lambda g: f"sk-ant-admin01-{g.r(60)}AA", template=_SAY),
    Entry("aws-akia", PROVIDER, lambda g: f"AKIA{g.r(16, UPPER_NUM)}", template=_SAY),
    Entry("aws-asia", PROVIDER, lambda g: f"ASIA{g.r(16, UPPER_NUM)}", template=_SAY),
    Entry("github-ghp", PROVIDER, lambda g: f"ghp_{g.r(36)}", template=_SAY),
    Entry("github-gho", PROVIDER, lambda g: f"gho_{g.r(36)}", template=_SAY),
    Entry("github-ghs", PROVIDER, lambda g: f"ghs_{g.r(36)}", template=_SAY),
    Entry("github-ghu", PROVIDER, lambda g: f"ghu_{g.r(36)}", template=_SAY),
    Entry("github-ghr", PROVIDER, lambda g: f"ghr_{g.r(36)}", template=_SAY),
    Entry("github-pat", PROVIDER, lambda g: f"github_pat_{g.r(22)}_{g.r(59)}", template=_SAY),
    Entry(
        "slack-xoxb",
        PROVIDER,
        lambda g: f"xoxb-{g.digits(11)}-{g.digits(13)}-{g.r(24)}",
        template=_SAY,
    ),
    Entry(
        "slack-xoxp",
        PROVIDER,
        lambda g: f"xoxp-{g.digits(11)}-{g.digits(11)}-{g.digits(13)}-{g.r(32, HEX)}",
        template=_SAY,
    ),
    Entry("google-aiza", PROVIDER, lambda g: f"AIza{g.r(20)}_{g.r(14)}", template=_SAY),
    Entry("stripe-sk-live", PROVIDER, lambda g: f"sk_live_51{g.r(60)}", template=_SAY),
    Entry("stripe-rk-live", PROVIDER, lambda g: f"rk_live_51{g.r(60)}", template=_SAY),
    Entry("stripe-whsec", PROVIDER, lambda g: f"whsec_{g.r(32)}", template=_SAY),
    Entry("huggingface-hf", PROVIDER, lambda g: f"hf_{g.r(34, LETTERS)}", template=_SAY),
    Entry("gitlab-glpat", PROVIDER, lambda g: f"glpat-{g.r(20)}", template=_SAY),
    Entry("sendgrid", PROVIDER, lambda g: f"SG.{g.r(22)}.{g.r(43)}", template=_SAY),
    Entry("twilio-sk", PROVIDER, lambda g: f"SK{g.r(32, HEX)}", template=_SAY),
    Entry("npm", PROVIDER, lambda g: f"npm_{g.r(36)}", template=_SAY),
    Entry(
        "pypi",
        PROVIDER,
        lambda g: f"pypi-AgEIcHlwaS5vcmc{g.r(40)}-{g.r(30)}",
        template="twine upload -p {s} dist/*",
    ),
    Entry("digitalocean", PROVIDER, lambda g: f"dop_v1_{g.r(64, HEX)}", template=_SAY),
    Entry("shopify", PROVIDER, lambda g: f"shpat_{g.r(32, HEX)}", template=_SAY),
    Entry("databricks", PROVIDER, lambda g: f"dapi{g.r(32, HEX)}", template=_SAY),
    Entry("groq", PROVIDER, lambda g: f"gsk_{g.r(52)}", template=_SAY),
    Entry("xai", PROVIDER, lambda g: f"xai-{g.r(80)}", template=_SAY),
    Entry("google-oauth-secret", PROVIDER, lambda g: f"GOCSPX-{g.r(28)}", template=_SAY),
    # provider keys under the names they are usually kept under
    Entry("OPENAI_API_KEY", PROVIDER_KEYED, lambda g: f"sk-proj-{g.r(48)}", "OPENAI_API_KEY"),
    Entry(
        "ANTHROPIC_API_KEY",
        PROVIDER_KEYED,
        lambda g: f"sk-ant-api03-{g.r(93)}AA",
        "ANTHROPIC_API_KEY",
        style=":",
    ),
    Entry(
        "aws_access_key_id",
        PROVIDER_KEYED,
        lambda g: f"AKIA{g.r(16, UPPER_NUM)}",
        "aws_access_key_id",
        style=":",
    ),
    Entry("GITHUB_TOKEN", PROVIDER_KEYED, lambda g: f"ghp_{g.r(36)}", "GITHUB_TOKEN"),
    Entry("HF_TOKEN", PROVIDER_KEYED, lambda g: f"hf_{g.r(34, LETTERS)}", "HF_TOKEN"),
    Entry(
        "STRIPE_SECRET_KEY",
        PROVIDER_KEYED,
        lambda g: f"sk_live_51{g.r(60)}",
        "STRIPE_SECRET_KEY",
        style='="',
    ),
    Entry(
        "SLACK_BOT_TOKEN",
        PROVIDER_KEYED,
        lambda g: f"xoxb-{g.digits(11)}-{g.digits(13)}-{g.r(24)}",
        "SLACK_BOT_TOKEN",
        style="json",
    ),
    # JWTs
    Entry("jwt-bare", JWT, jwt, template="session {s} expired, signing in again"),
    Entry("jwt-bearer", JWT, jwt, template="Authorization: Bearer {s}"),
    Entry("jwt-cookie", JWT, jwt, template="Cookie: auth={s}; theme=dark"),
    Entry("jwt-id_token", JWT, jwt, "id_token", style="json"),
    # PEM private keys (multi-line)
    Entry("pem-rsa", PEM, pem("RSA"), template="deploy key:\n{s}\n"),
    Entry("pem-ec", PEM, pem("EC"), template="{s}"),
    Entry("pem-openssh", PEM, pem("OPENSSH"), template="~/.ssh/id_ed25519 is\n{s}"),
    Entry("pem-pkcs8", PEM, pem(""), template="{s}"),
    Entry("pem-encrypted", PEM, pem("ENCRYPTED"), template="{s}"),
    Entry("pem-privateKey", PEM, pem("RSA"), "privateKey", style="json"),
    Entry(
        "pem-in-service-account-json",
        PEM,
        lambda g: pem("")(g).replace("\n", "\\n"),
        template='{{"type": "service_account", "private_key": "{s}\\n", "client_email": '
        '"svc@proj.iam.gserviceaccount.com"}}',
    ),
    # credentials in URLs
    Entry(
        "url-postgresql",
        URL,
        url_password,
        template="connecting to postgresql://app_user:{s}@db.internal:5432/orders",
    ),
    Entry("url-postgres", URL, url_password, template="postgres://etl:{s}@10.0.3.7/warehouse"),
    Entry("url-mysql", URL, url_password, template="mysql://root:{s}@10.0.0.5:3306/shop"),
    Entry(
        "url-mongodb-srv",
        URL,
        url_password,
        template="mongodb+srv://svc:{s}@cluster0.ab1cd.mongodb.net/prod?retryWrites=true",
    ),
    Entry(
        "url-https-userinfo",
        URL,
        url_password,
        template="git clone https://deploy:{s}@git.example.com/org/repo.git",
    ),
    Entry("url-redis", URL, url_password, template="redis://:{s}@cache.internal:6379/0"),
    Entry("url-amqp", URL, url_password, template="amqp://guest:{s}@mq.internal:5672/"),
    Entry("url-ftp", URL, url_password, template="ftp://upload:{s}@files.example.com/in/"),
    Entry(
        "url-query-api_key",
        URL,
        opaque(32),
        template="GET https://api.example.com/v1/search?q=shoes&api_key={s}",
    ),
    Entry(
        "url-query-token",
        URL,
        opaque(40),
        template="https://files.example.com/download/report.pdf?token={s}",
    ),
    Entry(
        "url-query-access_token",
        URL,
        opaque(40),
        template="https://graph.example.com/me?access_token={s}&fields=id",
    ),
    Entry(
        "url-query-sig",
        URL,
        lambda g: f"{g.r(20)}%2B{g.r(20)}%3D",
        template="https://acct.blob.core.windows.net/c/f.pdf?sv=2022-11-02&sr=b&sp=r&sig={s}",
    ),
    Entry(
        "url-query-client_secret",
        URL,
        opaque(40),
        template="https://login.example.com/oauth/token?client_id=web&client_secret={s}",
    ),
    Entry(
        "url-query-x-amz-signature",
        URL,
        opaque(64, HEX),
        template="https://bucket.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Signature={s}",
    ),
    Entry(
        "url-slack-webhook",
        URL,
        opaque(24),
        template="https://hooks.slack.com/services/T0000AAAA/B0000BBBB/{s}",
    ),
    Entry(
        "url-jdbc-password",
        URL,
        url_password,
        template="jdbc:postgresql://db:5432/app?user=app&password={s}",
    ),
    Entry(
        "DATABASE_URL",
        URL,
        low_entropy(0),
        "DATABASE_URL",
        template="postgresql://app:{s}@db.internal:5432/app",
    ),
    # name=value secrets in free text
    Entry(
        "text-password=", TEXT, low_entropy(0), template="login failed for ada with password={s}"
    ),
    Entry("text-passwd=", TEXT, low_entropy(2), template="useradd -m ci --passwd={s}"),
    Entry("text-pwd=", TEXT, low_entropy(4), template="Server=db;Uid=app;Pwd={s};"),
    Entry("text-api_key:", TEXT, opaque(32), template="api_key: {s}"),
    Entry("text-apikey=", TEXT, opaque(32), template="calling with apikey={s}"),
    Entry("text-bearer-opaque", TEXT, opaque(40), template="Authorization: Bearer {s}"),
    Entry("text-basic", TEXT, basic_credentials, template="Authorization: Basic {s}"),
    Entry("text-token-header", TEXT, opaque(40, HEX), template="Authorization: Token {s}"),
    Entry("text-secret=", TEXT, opaque(32), template="webhook secret={s} rotated"),
    Entry("text-DB_PASSWORD=", TEXT, low_entropy(1), template="DB_PASSWORD={s}"),
    Entry("text-client_secret=", TEXT, opaque(40), template="client_secret={s}&grant=cc"),
    Entry("text-passphrase=", TEXT, low_entropy(1), template="ssh-keygen passphrase={s} accepted"),
    Entry("text-token=", TEXT, opaque(40), template="retry with token={s}"),
    Entry("text-json-password", TEXT, low_entropy(3), template='payload {{"password": "{s}"}}'),
    Entry("text-yaml-password", TEXT, low_entropy(2), template='db:\n  password: "{s}"\n'),
    Entry(
        "text-cli-password-flag",
        TEXT,
        low_entropy(0),
        template="docker login -u ci --password {s} registry.example.com",
    ),
    Entry("text-PGPASSWORD=", TEXT, low_entropy(4), template="PGPASSWORD={s} psql -h db app"),
    Entry("text-AWS_SECRET_ACCESS_KEY=", TEXT, aws_secret, template="AWS_SECRET_ACCESS_KEY={s}"),
    Entry(
        "text-aws-credentials-ini",
        TEXT,
        aws_secret,
        template="[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\n"
        "aws_secret_access_key = {s}\n",
    ),
    Entry(
        "text-set-cookie",
        TEXT,
        opaque(32),
        template="Set-Cookie: session={s}; Path=/; HttpOnly",
    ),
    Entry("text-cookie", TEXT, opaque(32), template="Cookie: sessionid={s}; csrftoken=abc"),
    Entry("text-x-api-key", TEXT, opaque(32, HEX), template="X-Api-Key: {s}"),
    Entry("text-x-auth-token", TEXT, opaque(32), template="x-auth-token: {s}"),
    Entry(
        "text-azure-storage-connection",
        TEXT,
        azure_account_key,
        template="DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={s};"
        "EndpointSuffix=core.windows.net",
    ),
    Entry(
        "text-odbc-password",
        TEXT,
        low_entropy(3),
        template="Server=tcp:db.example.com;Database=app;User Id=app;Password={s};",
    ),
    Entry(
        "text-libpq-dsn", TEXT, low_entropy(2), template="host=db dbname=app user=app password={s}"
    ),
    Entry("text-curl-u", TEXT, low_entropy(0), template="curl -u admin:{s} https://ci.example.com"),
    # low-entropy values under secret-looking keys
    *(
        Entry(f"low-{key}", LOW, low_entropy(i), key, style=("=", ":", '="', "json")[i % 4])
        for i, key in enumerate(
            (
                "password",
                "DBPassword",
                "dbPassword",
                "db-password",
                "db_password",
                "secret_key",
                "SECRET_KEY",
                "passphrase",
                "X-Api-Key",
                "apiKey",
                "privateKey",
                "clientSecret",
                "x-auth-token",
                "cookie",
                "set-cookie",
                "passwd",
                "pwd",
                "api_token",
                "access_token",
                "refresh_token",
                "secret",
                "token",
                "client_secret",
                "DB_PASSWORD",
                "PGPASSWORD",
                "MYSQL_PWD",
                "REDIS_PASSWORD",
                "webhook_secret",
                "credentials",
                "auth",
                "encryption_key",
                "signing_key",
            )
        )
    ),
    Entry(
        "low-Authorization",
        LOW,
        low_entropy(0),
        "Authorization",
        template="Bearer {s}",
        style=":",
    ),
    Entry("low-OPENAI_API_KEY", LOW, low_entropy(2), "OPENAI_API_KEY"),
    # high-entropy values under secret-looking keys
    Entry("high-aws_secret_access_key", HIGH, aws_secret, "aws_secret_access_key"),
    Entry("high-AWS_SECRET_ACCESS_KEY", HIGH, aws_secret, "AWS_SECRET_ACCESS_KEY", style=":"),
    Entry("high-AZURE_OPENAI_API_KEY", HIGH, opaque(32, HEX), "AZURE_OPENAI_API_KEY"),
    Entry("high-Ocp-Apim-Subscription-Key", HIGH, opaque(32, HEX), "Ocp-Apim-Subscription-Key"),
    Entry("high-api-key", HIGH, opaque(32, HEX), "api-key", style=":"),
    Entry(
        "high-AZURE_CLIENT_SECRET",
        HIGH,
        lambda g: f"{g.r(3)}8Q~{g.r(34)}",
        "AZURE_CLIENT_SECRET",
        style='="',
    ),
    Entry("high-AccountKey", HIGH, azure_account_key, "AccountKey"),
    Entry("high-django-SECRET_KEY", HIGH, opaque(50), "SECRET_KEY", style="json"),
    Entry("high-flask-secret_key", HIGH, opaque(64, HEX), "secret_key"),
    Entry("high-client_secret", HIGH, opaque(40), "client_secret", style=":"),
    Entry("high-signing_secret", HIGH, opaque(32, HEX), "signing_secret"),
    Entry("high-jwt_secret", HIGH, opaque(48), "jwt_secret", style='="'),
    Entry("high-encryption_key", HIGH, opaque(44), "encryption_key"),
    Entry("high-x-goog-api-key", HIGH, lambda g: f"AIza{g.r(35)}", "x-goog-api-key"),
    Entry("high-token", HIGH, opaque(40, HEX), "token", style="json"),
)


def render(entry: Entry, value: str) -> str:
    """A keyed entry as it reads in free text, in its style."""
    key = entry.key
    assert key is not None
    if entry.style == "json":
        return f"{json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}"
    if entry.style == '="':
        return f'{key}="{value}"'
    if entry.style == ":":
        return f"{key}: {value}"
    return f"{key}={value}"


# --- positions ------------------------------------------------------------------------


@dataclass(frozen=True)
class Position:
    name: str
    doc: str
    select: str = "all"
    """``all`` entries; ``header-safe``: keyed entries whose value can be an HTTP header
    or a query parameter, one per key; ``one-per-class``: the first entry of each class;
    ``entry:ID``: that entry only."""
    runs: tuple[int, ...] = (1,)
    """Run 1 goes through every position and succeeds; run 2 is short, has fresh values
    at a few positions (for diff and compare) and fails."""
    engines: tuple[str, ...] = ("sqlite", "postgresql")


BOTH = (1, 2)
POSITIONS: tuple[Position, ...] = (
    Position("step.kwargs", "step keyword arguments named by the key (**options); *notes"),
    Position("arg.dict", "a field nested two levels deep in a dict argument"),
    Position("arg.mappingproxy", "a types.MappingProxyType inside a dict argument"),
    Position("arg.userdict", "a collections.UserDict inside a dict argument"),
    Position("arg.custom_mapping", "a custom Mapping subclass (with a repr) in a dict"),
    Position("arg.header_pairs", 'a list of header pairs [("Authorization", "Bearer …")]'),
    Position("arg.pydantic", "a pydantic model field (the key is the field name)"),
    Position("arg.dataclass", "a dataclass field (the key is the field name)"),
    Position("arg.object_attr", "an attribute of a plain object (recorded by its repr)"),
    Position("arg.object_repr", "an object whose __repr__ is Client(key='value')"),
    Position("arg.json_string", 'a JSON string argument: \'{"s001": {"password": "…"}}\''),
    Position("arg.environ", "an os.environ-shaped dict {OPENAI_API_KEY: …, DATABASE_URL: …}"),
    Position("output.struct", "a step's output: a dict", runs=BOTH),
    Position("output.text", "a step's output: a string", runs=BOTH),
    Position("output.json_string", "a step's output: a JSON string carrying an object"),
    Position("workflow.input", "the workflow's argument", runs=BOTH),
    Position("workflow.output", "the workflow's return value"),
    Position("workflow.error", "the message of the exception the workflow raises", runs=(2,)),
    Position("run.tags", "the workflow's tags", runs=BOTH),
    Position("exc.message", "a step attempt's exception message (the step retries)", runs=BOTH),
    Position("exc.cause", "the chained cause (raise X from Y) of a step's exception"),
    Position("exc.note", "exc.add_note() on a step's exception"),
    Position("exc.validation", "a step output that fails its pydantic validation"),
    Position("log.fstring", 'log.info(f"… {secret}") in a step', runs=BOTH),
    Position("log.args", 'log.warning("… %s", secret) in a step'),
    Position("log.exc_info", "log.error(…, exc_info=True): the secret in the traceback"),
    Position("log.structlog", "structlog (through stdlib) key=value in a step"),
    Position("log.run_level", "a log record in the workflow, outside any step"),
    Position("llm.scripted.messages", "st.llm.chat(scripted:…) message content", runs=BOTH),
    Position("llm.scripted.params", "st.llm.chat(scripted:…) keyword parameters"),
    Position("llm.scripted.response", "the scripted model's answer", runs=BOTH),
    Position("llm.openai.messages", "a message to the real OpenAI SDK (instrumented)"),
    Position("llm.openai.response", "the loopback OpenAI server's answer"),
    Position("llm.openai.tool_args", "tool-call arguments (a JSON string) in the answer"),
    Position(
        "llm.openai.stream",
        "a streamed answer, a chunk a word (the first entry of each class: a chunk costs)",
        select="one-per-class",
    ),
    Position("llm.openai.extra_headers", "extra_headers= of the call", select="header-safe"),
    Position("llm.openai.api_key", "the client's api_key", select="entry:openai-sk-proj"),
    Position("llm.anthropic.messages", "a message to the real Anthropic SDK (instrumented)"),
    Position("llm.anthropic.system", "the system= prompt of the Anthropic call"),
    Position("llm.anthropic.response", "the loopback Anthropic server's answer"),
    Position("llm.anthropic.tool_input", "tool_use input (an object) in the answer"),
    Position(
        "llm.anthropic.query",
        "default_query= of the client: in the URL httpx logs at INFO",
        select="header-safe",
    ),
    Position("llm.anthropic.api_key", "the client's api_key", select="entry:anthropic-api03"),
    Position("tool.request", "an @st.tool's arguments"),
    Position("tool.response", "an @st.tool's return value"),
    Position(
        "foreign.http_url",
        "requests (opentelemetry-instrumentation-requests) calls to loopback: a URL "
        "password in the userinfo, the rest as query parameters named by their keys",
    ),
    Position("foreign.attr_key", "a manual span's attributes named by the keys"),
    Position("foreign.connection_string", "a manual span's db.connection_string"),
    Position("foreign.header_tuple", 'http.request.header.authorization = ("…", …)'),
    Position(
        "config.store_url",
        "the password of the PostgreSQL store URL (STEPTRACE_STORE, --store)",
        select="entry:url-postgresql",
        engines=("postgresql",),
    ),
)


def _header_safe(entry: Entry, value: str) -> bool:
    return value.isascii() and "\n" not in value


# --- placements and the plan ----------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    id: str
    """``entry@position#run``"""
    entry: str
    cls: str
    mode: str
    position: str
    run: int
    slot: str
    """A neutral name for the entry in a structure: ``s001``."""
    key: str | None
    value: str
    """Keyed: what sits under the key. Embedded: the text."""
    text: str
    """The placement as free text (keyed: ``key=value`` in the entry's style)."""
    secret: str
    fragments: tuple[str, ...]


def place(entry: Entry, index: int, position: str, run: int, rng: random.Random) -> Placement:
    g = Gen(rng)
    secret = entry.secret(g)
    value = entry.template.format(s=secret)
    text = value if entry.key is None else render(entry, value)
    return Placement(
        id=f"{entry.id}@{position}#{run}",
        entry=entry.id,
        cls=entry.cls,
        mode=entry.mode,
        position=position,
        run=run,
        slot=f"s{index:03d}",
        key=entry.key,
        value=value,
        text=text,
        secret=secret,
        fragments=tuple(g.fragments),
    )


@dataclass
class Plan:
    """Every placement of the two runs each engine makes, by run and position (both
    engines store the same values, each in its own store)."""

    canaries: dict[int, str]
    """A value that is no secret, per run: places that show values must show it."""
    runs: dict[int, dict[str, list[Placement]]] = field(default_factory=dict)

    def placements(self) -> Iterator[Placement]:
        for positions in self.runs.values():
            for placements in positions.values():
                yield from placements

    def to_json(self) -> dict[str, Any]:
        return {
            "canaries": self.canaries,
            "runs": {
                str(run): {pos: [asdict(p) for p in ps] for pos, ps in positions.items()}
                for run, positions in self.runs.items()
            },
        }


def make_plan(seed: int, entries: Sequence[Entry] = ENTRIES) -> Plan:
    """Placements of every entry at every position (as the position selects) in the
    runs that position is in."""
    rng = random.Random(seed)
    plan = Plan({run: f"visible-canary-{run}-{Gen(rng).r(12)}" for run in (1, 2)})
    for run in (1, 2):
        plan.runs[run] = {}
        for position in POSITIONS:
            if run not in position.runs:
                continue
            chosen: list[Placement] = []
            seen_keys: set[str] = set()
            seen_classes: set[str] = set()
            for index, entry in enumerate(entries):
                if position.select.startswith("entry:") and entry.id != position.select[6:]:
                    continue
                if position.select == "one-per-class":
                    if entry.cls in seen_classes:
                        continue
                    seen_classes.add(entry.cls)
                placement = place(entry, index, position.name, run, rng)
                if position.select == "header-safe":
                    if (
                        entry.key is None
                        or entry.key.lower() in seen_keys
                        or not _header_safe(entry, placement.value)
                    ):
                        continue
                    seen_keys.add(entry.key.lower())
                chosen.append(placement)
            plan.runs[run][position.name] = chosen
    placements = list(plan.placements())
    assert all(p.fragments for p in placements), "a secret the scanner could not find"
    fragments = [f for p in placements for f in p.fragments]
    assert len(fragments) == len(set(fragments)), "a fragment repeats: reseed"
    return plan


# --- how a position holds placements (shared by the app and the tests) -----------------


def struct(placements: Iterable[Placement]) -> dict[str, Any]:
    """``{slot: {key: value}}`` (keyed) or ``{slot: {"note": text}}`` (embedded)."""
    return {p.slot: {p.key: p.value} if p.key is not None else {"note": p.text} for p in placements}


def joined(placements: Iterable[Placement]) -> str:
    """The placements as free text, one a line."""
    return "\n".join(p.text for p in placements)


def unique_keys(
    placements: Sequence[Placement],
    name: Callable[[Placement], str] | None = None,
    most: int | None = None,
) -> list[list[Placement]]:
    """The placements in groups in which the names they sit under in a flat structure
    (``name_of``, or ``name``: an environment variable's) are distinct, at most ``most``
    a group (OpenTelemetry keeps 128 attributes of a span)."""
    named = name or name_of
    groups: list[list[Placement]] = []
    names: list[set[str]] = []
    for p in placements:
        for group, taken in zip(groups, names, strict=True):
            if named(p) not in taken and (most is None or len(group) < most):
                group.append(p)
                taken.add(named(p))
                break
        else:
            groups.append([p])
            names.append({named(p)})
    return groups or [[]]


def name_of(p: Placement) -> str:
    """The key a placement sits under in a flat structure."""
    return p.key if p.key is not None else f"note_{p.slot}"


def identifier(key: str) -> str:
    """A key as a Python name (a field, an attribute): ``db-password`` → ``db_password``."""
    return re.sub(r"\W", "_", key)


def env_name(key: str) -> str:
    """A key as an environment variable: ``DBPassword`` → ``DB_PASSWORD``."""
    snake = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key)
    return re.sub(r"\W", "_", snake).upper()


def foreign_urls(placements: Sequence[Placement], base: str) -> list[str]:
    """The loopback URLs ``requests`` fetches for placements: one per URL password (in
    the userinfo), one per group of distinct keys with each value as a query parameter
    named by its key (embedded texts as ``note_<slot>``)."""
    host = base.split("://", 1)[1]
    urls = []
    rest = []
    for p in placements:
        if f":{p.secret}@" in p.value:
            urls.append(f"http://user:{urllib.parse.quote(p.secret, safe='')}@{host}/{p.slot}")
        else:
            rest.append(p)
    for group in unique_keys(rest):
        query = [(name_of(p), p.value if p.key is not None else p.text) for p in group]
        urls.append(f"{base}/search?{urllib.parse.urlencode(query)}")
    return urls


# --- the scanner ----------------------------------------------------------------------


def spellings(secret: str) -> set[str]:
    """The ways a secret can be written by the sinks: as is, JSON-escaped (with ``\\/``
    and ``\\uXXXX`` variants), as a Python repr, COPY-escaped JSON (pg_dump), doubled
    quotes (CSV), URL-quoted."""
    as_json = json.dumps(secret, ensure_ascii=False)[1:-1]
    ascii_json = json.dumps(secret)[1:-1]
    as_repr = repr(secret)[1:-1]
    out = {
        secret,
        as_json,
        ascii_json,
        as_json.replace("/", "\\/"),
        as_repr,
        json.dumps(as_repr, ensure_ascii=False)[1:-1],
        as_json.replace("\\", "\\\\"),
        ascii_json.replace("\\", "\\\\"),
        secret.replace('"', '""'),
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
    }
    return {s for s in out if s}


@dataclass(frozen=True)
class Hit:
    place: str
    placement: Placement
    kind: str
    """``whole``: the secret in one of its spellings; ``fragment``: a random run of it."""
    context: str
    """80 characters around the hit."""

    def line(self) -> str:
        p = self.placement
        return f"{p.entry} @ {p.position} (run {p.run}) [{self.kind}]: {self.context}"


class Scanner:
    """Finds placements in bytes: one Aho-Corasick pass over a blob for every fragment
    of every secret; a fragment found is then a *whole* hit when one of the secret's
    spellings surrounds it there, else a *fragment* hit."""

    def __init__(self, placements: Iterable[Placement]) -> None:
        needles: list[bytes] = []
        self.meaning: list[tuple[Placement, list[tuple[int, bytes]]]] = []
        for p in placements:
            encoded = [s.encode() for s in spellings(p.secret)]
            for fragment in p.fragments:
                needle = fragment.encode()
                around = [(s.find(needle), s) for s in encoded if needle in s]
                needles.append(needle)
                self.meaning.append((p, around))
        self.automaton = ahocorasick_rs.BytesAhoCorasick(
            needles,
            matchkind=ahocorasick_rs.MatchKind.LeftmostLongest,
            implementation=ahocorasick_rs.Implementation.ContiguousNFA,
        )

    def scan(self, place: str, blob: bytes) -> list[Hit]:
        """One hit per placement found in ``blob`` (whole preferred to a fragment)."""
        found: dict[str, Hit] = {}
        for index, start, end in self.automaton.find_matches_as_indexes(blob):
            placement, around = self.meaning[index]
            known = found.get(placement.id)
            if known is not None and known.kind == "whole":
                continue
            kind = "fragment"
            for offset, spelling in around:
                at = start - offset
                if at >= 0 and blob[at : at + len(spelling)] == spelling:
                    kind = "whole"
                    break
            if known is not None and kind == "fragment":
                continue
            middle = (start + end) // 2
            context = blob[max(0, middle - 40) : middle + 40].decode("utf-8", "replace")
            found[placement.id] = Hit(place, placement, kind, repr(context)[1:-1])
        return sorted(found.values(), key=lambda h: h.placement.id)


def describe(hits: Sequence[Hit], positions_shown: int = 4) -> str:
    """Per place: how many placements of how many entries leaked, then per entry the
    positions (and runs) it leaked from and the text around one hit."""
    by_place: dict[str, dict[str, list[Hit]]] = {}
    for hit in hits:
        by_place.setdefault(hit.place, {}).setdefault(hit.placement.entry, []).append(hit)
    lines = []
    for where, entries in by_place.items():
        total = sum(len(found) for found in entries.values())
        lines.append(f"{where}: {total} placement(s) of {len(entries)} entries leaked")
        for entry, found in sorted(entries.items()):
            positions = sorted({f"{h.placement.position}#{h.placement.run}" for h in found})
            shown = ", ".join(positions[:positions_shown])
            more = (
                f" +{len(positions) - positions_shown}" if len(positions) > positions_shown else ""
            )
            example = next((h for h in found if h.kind == "whole"), found[0])
            lines.append(f"  {entry} ({shown}{more}) [{example.kind}]: {example.context}")
    return "\n".join(lines)


def placement_from_json(data: dict[str, Any]) -> Placement:
    return Placement(**{**data, "fragments": tuple(data["fragments"])})


def catalogue(seed: int = 0) -> str:
    """The corpus, one entry a line: id, class, how it is placed (under which key), an
    example of the text it reads as, and its secret."""
    plan = make_plan(seed)
    lines = []
    for p in plan.runs[1]["log.fstring"]:
        placed = f"under {p.key!r}" if p.key is not None else "in text"
        lines.append(f"{p.entry:32s} {p.cls:32s} {placed:30s} {p.text!r} -> secret {p.secret!r}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(catalogue())
