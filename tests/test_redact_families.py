"""Credential formats of the public rule sets, by family (gitleaks' default rules,
detect-secrets' plugins, GitHub secret scanning's partner patterns).

Each example is a made-up credential in the shape the rule set describes, with the
secret part that must never be written. The unit tests run the redactor on the text
as a JSON string value; the family tests plant every example of a family through real
chains (a ``RunnableLambda`` and a real ``ChatOpenAI`` against the loopback stub, which
echoes and streams it 3 characters per chunk) and search every byte written: the
destination's files, the spool and the ``asynctrack`` log output.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import orjson
import pytest
from _infra.openai_stub import OpenAIStub, chat_model
from langchain_core.runnables import RunnableLambda

from asynctrack import AsyncTracker, TrackerConfig
from asynctrack._config import DEFAULT_REDACT_KEYS
from asynctrack._redact import REDACTED, Redactor, StreamRedactor


class Example(NamedTuple):
    name: str
    text: str  # as an application's event would carry it
    secret: str  # the part that must not be written
    #: Whether the stream keeps it out too: a format with no prefix of its own (a URL's
    #: password, a signature, a hex key) has the part streamed before the text showed it
    #: to be a credential written (the README's "Not caught").
    stream: bool = True


HEX64 = "9f2c4e1b7a0d3c5e8f1a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e2f4a6b8c0d2e"
B64_88 = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6QUJDREVGR0hJSktMTU5PUFFSUw=="

CLOUD = [
    Example(
        "AWS presigned URL",
        "https://bkt.s3.amazonaws.com/report.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAZ7Q4R2T8Y6U1I3O5%2F20261206%2Fus-east-1%2Fs3%2Faws4_request"
        f"&X-Amz-Date=20261206T120000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature={HEX64}",
        HEX64,
        stream=False,
    ),
    Example(
        "AWS presigned URL (SigV2)",
        "https://bkt.s3.amazonaws.com/a.txt?AWSAccessKeyId=AKIAZ7Q4R2T8Y6U1I3O5&Expires=1765000000"
        "&Signature=vjbyPxybdZaNmGa%2ByT272YEAiv4%3D",
        "vjbyPxybdZaNmGa",
        stream=False,
    ),
    Example(
        "GCP signed URL",
        "https://storage.googleapis.com/bkt/o.txt?X-Goog-Algorithm=GOOG4-RSA-SHA256"
        "&X-Goog-Date=20261206T120000Z&X-Goog-Expires=900&X-Goog-SignedHeaders=host"
        f"&X-Goog-Signature={HEX64[::-1]}",
        HEX64[::-1],
        stream=False,
    ),
    Example(
        "GCP service account JSON",
        '{"type": "service_account", "project_id": "p", "private_key_id": "1a2b",'
        ' "private_key": "-----BEGIN PRIVATE KEY-----'
        "\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7gcpkey"
        '\\n-----END PRIVATE KEY-----\\n", "client_email": "sa@p.iam.gserviceaccount.com"}',
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7gcpkey",
    ),
    Example(
        "GCP OAuth access token",
        "token ya29.a0AfB_byC3xQk8LmN2pR5sT7vW9yZ1bD4fH6jK8mP0qS",
        "a0AfB_byC3xQk8LmN2pR5sT7",
    ),
    Example(
        "Azure storage connection string",
        f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={B64_88};EndpointSuffix=core.windows.net",
        B64_88[:60],
    ),
    Example(
        "Azure SAS URL",
        "https://acct.blob.core.windows.net/c/b.txt?sv=2022-11-02&ss=b&srt=o&sp=r"
        "&se=2026-12-07T00:00:00Z&spr=https&sig=q72cZ1Ml4tVTZloHdOmJdCLsU5NccB1%2BYa%3D",
        "q72cZ1Ml4tVTZloHdOmJdCLsU5NccB1",
        stream=False,
    ),
    Example(
        "Azure Service Bus connection string",
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;"
        "SharedAccessKey=Xy7Q2mR9vL4kT8pN3wZ6bC1dF5gH0jK2sA4eU6iO8yM=",
        "Xy7Q2mR9vL4kT8pN3wZ6bC1dF5gH0jK2sA4eU6iO8yM",
    ),
]

DATABASES = [
    Example("postgres URL", "postgresql://app:pg-Pw-7c1e@db.internal:5432/app", "pg-Pw-7c1e", stream=False),
    Example("mysql URL", "mysql://root:my-Pw-2b8d@10.0.0.5:3306/shop", "my-Pw-2b8d", stream=False),
    Example(
        "mongodb+srv URL",
        "mongodb+srv://svc:mongo-Pw-4a9f@cluster0.ab1cd.mongodb.net/db",
        "mongo-Pw-4a9f",
        stream=False,
    ),
    Example("redis URL, password only", "redis://:redis-Pw-6e3a@cache:6379/0", "redis-Pw-6e3a", stream=False),
    Example("amqp URL", "amqps://guest:amqp-Pw-1f7b@mq.example.com:5671/vhost", "amqp-Pw-1f7b", stream=False),
    Example(
        "JDBC password=",
        "jdbc:mysql://db:3306/app?user=app&password=jdbc-Pw-8d2c&useSSL=true",
        "jdbc-Pw-8d2c",
    ),
    Example(
        "JDBC Oracle thin", "jdbc:oracle:thin:scott/ora-Pw-3c5d@//db:1521/ORCL", "ora-Pw-3c5d", stream=False
    ),
    Example(
        "ADO.NET connection string",
        "Server=tcp:db.database.windows.net,1433;User ID=sa;Password=ado-Pw-5e7f;Encrypt=True",
        "ado-Pw-5e7f",
    ),
]

SAAS = [
    Example(
        "Twilio API key",
        "twilio SK2f6c0a9d3e8b7f1c4a5d6e9b0c3f7a8d",
        "SK2f6c0a9d3e8b7f1c4a5d6e9b0c3f7a8d",
        stream=False,
    ),
    Example(
        "Mailgun API key",
        "mg key-3ax6xnjp29jd6fds4gc373sgvjxteol0",
        "key-3ax6xnjp29jd6fds4gc373sgvjxteol0",
        stream=False,
    ),
    Example(
        "Mailchimp API key",
        "mc 136cb94838da83a906263ec23d03dce9-us21",
        "136cb94838da83a906263ec23d03dce9",
        stream=False,
    ),
    Example(
        "Shopify access token",
        "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",
        "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",
    ),
    Example(
        "Square access token",
        "sq EAAAEHb0c8kL2mN4pQ6rS8tU0vW2xY4zA6bC8dE0fG2hI4jK6lM8nO0pQ2rS4tU6vW8xY0zA2bC4dE6fG8",
        "EAAAEHb0c8kL2mN4pQ6rS8tU0vW2xY4z",
        stream=False,
    ),
    Example(
        "Square OAuth secret",
        "sq0csp-iA7Mxf0zIQQeU2wpBdWrEUr1UyuhjzRQD4dj2Lkcuu8L",
        "sq0csp-iA7Mxf0zIQQeU2wpBd",
    ),
    Example("New Relic user key", "NRAK-7QX2K9M4T1B8V6N3C0Z5L2J7H4G", "NRAK-7QX2K9M4T1B8V6N3C0Z5L2J7H4G"),
    Example(
        "New Relic license key",
        "c565652490ee305fe9f285a92b16aa29374fNRAL",
        "c565652490ee305fe9f285a92b16aa29374f",
        stream=False,
    ),
    Example(
        "Heroku API key (v2)",
        "HRKU-AA0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRST_-01",
        "HRKU-AA0123456789abcdefghijklmno",
    ),
    Example("DigitalOcean token", f"dop_v1_{HEX64[1:]}0", HEX64[1:] + "0"),
    Example(
        "Discord webhook URL",
        "https://discord.com/api/webhooks/1234567890123456789/Ab3_Cd5-bh6fI750Foa5MZSA3OHXcG1GdSK5LYQqx",
        "Ab3_Cd5-bh6fI750Foa5MZSA3OHXcG1GdSK5LYQqx",
        stream=False,
    ),
    Example(
        "Telegram bot token",
        "https://api.telegram.org/bot7123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/getMe",
        "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw",
        stream=False,
    ),
    Example(
        "Atlassian API token",
        "ATATT3xFfGF0T4nWm2qLr8sMtSNHkVIJ82GYB4qWyw198grxrAQIEuGC9Th4FmaSqb5Savib4jQ6MIwHv3iniKq7fqwe3I6=A1B2C3D4",
        "ATATT3xFfGF0T4nWm2qLr8sMtSNHkVIJ8",
    ),
    Example(
        "Linear API key",
        "lin_api_9dBXMkP1m88C83G83zWeCQjZma5LjkaW12t2WXxB",
        "lin_api_9dBXMkP1m88C83G83zWeCQjZ",
    ),
    Example(
        "Notion integration token",
        "ntn_123456789012SKJcc2uuc3Z5xO07rDYzDu5dE66la80lmKZS",
        "ntn_123456789012SKJcc2uuc3Z5xO07",
    ),
    Example(
        "Notion secret (old)",
        "secret_yPIBYkvnDsTnd4xbmtyAiJxq9HbU3cKS0qqOqewcB1Y",
        "yPIBYkvnDsTnd4xbmtyAiJxq9HbU3c",
        stream=False,
    ),
    Example("Airtable personal access token", f"pat9PnUrD5eOeQTQo.{HEX64[::-1]}", HEX64[::-1], stream=False),
    Example(
        "Postman API key",
        "PMAK-b070cb2d9a3438b0421b81c5-b070cb2d9a3438b0421b81c599ca66e54c",
        "PMAK-b070cb2d9a3438b0421b81c5",
    ),
    Example(
        "Doppler token",
        "dp.pt.ZzWP4YCiqkedybGSoqpavztYLvpQky9XyFZdjJVMtb9mai2",
        "WP4YCiqkedybGSoqpavztYLvpQk",
    ),
    Example(
        "Databricks token", "dapia10920578db82dfcbc7c53f695fa50cf-3", "dapia10920578db82dfcbc7c53f695fa50cf"
    ),
    Example(
        "HashiCorp Vault token",
        "hvs.CAESIfCRFQgcbwQsLpOi4MYaGjQscIev74yVc1qt9a3yAVO49pk1zxlJv6loN",
        "CAESIfCRFQgcbwQsLpOi4MYaGjQscIev",
    ),
    Example(
        "Slack app token",
        "xapp-1-A0123456789-1234567890123-dd32beb15ba8a9fc72f4d70cb04f3834e23c95bedf985d85b277904d7b20b17c",
        "dd32beb15ba8a9fc72f4d70cb04f3834e23c95bedf985d85",
    ),
    Example("Stripe webhook secret", "whsec_RQlmRgdo54Zz7gkXkbjdhxRbNHtWIrRY", "whsec_RQlmRgdo54Zz7gkXkbjdh"),
    Example(
        "Google OAuth client secret", "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p", "GOCSPX-tlKTpRx21raYqMutM6"
    ),
    Example("GitLab runner token", "glrt-CkDyanXfnUeVyO6W0H38", "glrt-CkDyanXfnUeVyO6W0H38"),
    Example(
        "Tavily API key", "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", "pjwd7v4tFzsWkEEkuOkVG4Frb3ewqWB2"
    ),
    Example(
        "Perplexity API key",
        "pplx-9LxuEpRo5cuQ7qVkWToDVqsWfyB1uPoON5sWOs50Y2N2jcwcLe",
        "9LxuEpRo5cuQ7qVkWToDVqsWfyB1uPoO",
    ),
    Example(
        "Pinecone API key",
        "pcsk_4Xy7Qz_ZowCWVCYVMZc3nSjiJnFGbc58vZdHlsARsiSHsUCmkm7oZPRNpq3Odrnp",
        "ZowCWVCYVMZc3nSjiJnFGbc58vZdHlsA",
    ),
    Example(
        "Sentry auth token",
        "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",
        "8df829a02f03939124846d2d4115a8ba3d20",
    ),
    Example(
        "LangSmith key (old)", "ls__2c174102a1049a2cfb4fe2e3d7ae843b", "ls__2c174102a1049a2cfb4fe2e3d7ae843b"
    ),
    Example(
        "age secret key",
        "AGE-SECRET-KEY-1QQPZRY9X8GF2TVDW0S3JN54KHCE6MUA7LQPZRY9X8GF2TVDW0S3JN54KHCE6",
        "1QQPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L",
    ),
    Example(
        "Datadog key (keyed)",
        "DD_API_KEY=a496d543f764f602d24f5419aa378809",
        "a496d543f764f602d24f5419aa378809",
    ),
    Example(
        "Azure OpenAI key (header)",
        "api-key: 2bd3a1184e179bc0743dcab8c1d628a4",
        "2bd3a1184e179bc0743dcab8c1d628a4",
    ),
]

PRIVATE_KEYS = [
    *(
        Example(
            f"PEM {kind}",
            f"-----BEGIN {kind}-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n"
            f"-----END {kind}-----\n",
            "MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu",
        )
        for kind in (
            "RSA PRIVATE KEY",
            "EC PRIVATE KEY",
            "DSA PRIVATE KEY",
            "PRIVATE KEY",
            "ENCRYPTED PRIVATE KEY",
            "OPENSSH PRIVATE KEY",
            "PGP PRIVATE KEY BLOCK",
        )
    ),
    Example(
        "SSH2 (ssh.com) private key",
        '---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----\nComment: "k"\nP2/56wAAAi4AAAA3aWYtbW9kbnssh2key\n'
        "---- END SSH2 ENCRYPTED PRIVATE KEY ----\n",
        "P2/56wAAAi4AAAA3aWYtbW9kbnssh2key",
    ),
    Example(
        "PuTTY private key",
        "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: k\nPublic-Lines: 2\n"
        "AAAAC3NzaC1lZDI1NTE5AAAAIPublicPart\nPrivate-Lines: 1\nAAAAIPuttyPrivatePart0123456789abcdef\n"
        "Private-MAC: abcdef0123456789\n",
        "AAAAIPuttyPrivatePart0123456789abcdef",
    ),
]

CREDENTIAL_FILES = [
    Example(
        ".netrc line",
        "machine api.example.com login bob password netrc-Pw-1a2b",
        "netrc-Pw-1a2b",
        stream=False,
    ),
    Example(
        ".netrc entry over lines",
        "machine api.example.com\n  login bob\n  password netrc-Pw-3c4d\n",
        "netrc-Pw-3c4d",
        stream=False,
    ),
    Example(
        ".pgpass line",
        "# ~/.pgpass\ndb.internal:5432:app:bob:pgpass-Pw-5e6f\n*:*:*:ro:pgpass-Pw-7a8b",
        "pgpass-Pw-5e6f",
        stream=False,
    ),
    Example(
        ".pgpass line (wildcards)", "# ~/.pgpass\n*:*:*:ro:pgpass-Pw-9c0d", "pgpass-Pw-9c0d", stream=False
    ),
    Example(
        ".npmrc auth token",
        "registry=https://npm.internal/\n//npm.internal/:_authToken=npmrc-Tok-9c0d1e",
        "npmrc-Tok-9c0d1e",
    ),
    Example(".npmrc _auth", "//npm.internal/:_auth=bnBtcmMtYXV0aC0yZjNn", "bnBtcmMtYXV0aC0yZjNn"),
    Example(
        ".pypirc section",
        "[distutils]\nindex-servers = pypi\n\n[pypi]\nusername = __token__\npassword = pypirc-Pw-4h5i\n",
        "pypirc-Pw-4h5i",
    ),
    Example(
        ".git-credentials line", "https://bob:gitcred-Pw-6j7k@github.com", "gitcred-Pw-6j7k", stream=False
    ),
    Example(
        "docker config auth",
        '{"auths": {"registry.example.com": {"auth": "Ym9iOmRvY2tlci1Qdy04bDlt"}}}',
        "Ym9iOmRvY2tlci1Qdy04bDlt",
    ),
]

TOKENS_IN_TRANSIT = [
    Example(
        "JWT",
        "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJib2IiLCJleHAiOjE3NjUwMDAwMDB9.c2lnbmF0dXJlLWhlcmU",
        "eyJzdWIiOiJib2IiLCJleHAiOjE3NjUwMDAwMDB9",
    ),
    Example(
        "basic auth in a URL",
        "https://bob:basic-Pw-0n1o@internal.example.com/api",
        "basic-Pw-0n1o",
        stream=False,
    ),
    Example("basic auth header", "Authorization: Basic Ym9iOmJhc2ljLWhkci1Qdw==", "Ym9iOmJhc2ljLWhkci1Qdw"),
]

FAMILIES = {
    "cloud keys and signed URLs": CLOUD,
    "database and broker connection strings": DATABASES,
    "API tokens of SaaS": SAAS,
    "private keys": PRIVATE_KEYS,
    "credential files": CREDENTIAL_FILES,
    "tokens in transit": TOKENS_IN_TRANSIT,
}
ALL = [example for family in FAMILIES.values() for example in family]


#: Where a format stands in a text: after a JSON escape's letter, after a space (the
#: run-based formats' two-byte prefixes), after more runs of 20 token characters than
#: are judged one by one (the rest: one C call per run).
CONTEXTS = {
    "after a newline": "here:\n{}\n(end)",
    "after a space": "here: {} (end)",
    "after many runs": " ".join(["x" * 20] * 30) + "\n{}\n" + " ".join(["y" * 20] * 30),
}


@pytest.mark.parametrize("context", list(CONTEXTS))
@pytest.mark.parametrize("example", ALL, ids=[e.name for e in ALL])
def test_a_format_of_the_public_rule_sets_is_redacted(example: Example, context: str) -> None:
    assert example.secret in example.text
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    text = CONTEXTS[context].format(example.text)
    out = redactor.json(orjson.dumps({"data": {"text": text}}))
    assert out is not None
    assert example.secret.encode() not in out, out
    assert REDACTED.encode() in out
    assert example.secret not in redactor.text(example.text)


# -- through real chains: every written byte -------------------------------------------------


def _written(roots: list[Path]) -> bytes:
    return b"\n".join(p.read_bytes() for root in roots for p in sorted(root.rglob("*")) if p.is_file())


def _streamed(root: Path) -> str:
    """The streamed tokens' text as written, joined in order (a secret split across
    tokens is whole again here)."""
    lines = [
        orjson.loads(line)
        for path in sorted(root.rglob("*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]
    return "".join(
        e["data"]["token"] for e in sorted(lines, key=lambda e: e["seq"]) if e["kind"] == "llm_new_token"
    )


def _middle(secret: str) -> str:
    half = len(secret) // 2
    return secret[half - 4 : half + 4]


@pytest.mark.parametrize("family", list(FAMILIES), ids=list(FAMILIES))
def test_a_family_planted_through_real_chains_is_never_written(
    family: str, tmp_destination: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="asynctrack")
    examples = FAMILIES[family]
    spool = tmp_path / "spool"
    tracker = AsyncTracker(
        tmp_destination, experiment_name="families", run_name="r", config=TrackerConfig(spool_dir=str(spool))
    )
    try:
        for example in examples:
            document = f"config follows:\n{example.text}\nend of config"
            # Inputs, outputs, the run's name and an error message of a runnable.
            RunnableLambda(lambda x: {"echo": x["document"]}).invoke(
                {"document": document}, config={"callbacks": [tracker]}
            )

            def fail(_: object, text: str = example.text) -> None:
                raise RuntimeError(f"could not load:\n{text}")

            with pytest.raises(RuntimeError):
                RunnableLambda(fail).invoke("x", config={"callbacks": [tracker]})
        # A real ChatOpenAI: each example in a prompt and in the answer, and streamed
        # back 3 characters per chunk.
        with OpenAIStub() as stub:
            model = chat_model(stub.url)
            for example in examples:
                answer = model.invoke("echo: " + example.text, config={"callbacks": [tracker]})
                assert answer.content == example.text
                streamed = model.stream("echo: " + example.text, config={"callbacks": [tracker]})
                assert "".join(str(chunk.content) for chunk in streamed) == example.text
    finally:
        tracker.close(timeout=30)
    written = _written([tmp_destination, spool]) + caplog.text.encode()
    stream = _streamed(tmp_destination)
    # Streamed 3 characters per token, a secret's middle is where a leak shows.
    leaks = [
        (e.name, e.secret.encode() in written, e.stream and _middle(e.secret) in stream) for e in examples
    ]
    leaks = [leak for leak in leaks if leak[1] or leak[2]]
    assert leaks == [], "\n".join(map(str, leaks))
    assert written.count(REDACTED.encode()) >= 3 * len(examples)


@pytest.mark.parametrize(
    "secret",
    [
        "Bearer Zq8VnR2mX5tL0wJ7bK3y",
        "SG.Zq8VnR2mX5tL0wJ7bK3y.H9dF6sA1pC4eQ2wE",
        "hvs.Zq8VnR2mX5tL0wJ7bK3yH9dF6sA1",
    ],
)
def test_a_literal_format_right_after_a_json_newline_is_redacted(secret: str) -> None:
    # In JSON text "\nBearer ..." puts the escape's letter right before the format: it
    # is not a word character of the text.
    out = Redactor(DEFAULT_REDACT_KEYS).text(f"first line\n{secret}\nlast line")
    assert "Zq8VnR2mX5tL0wJ7bK3y" not in out
    assert out.startswith("first line\n") and out.endswith("\nlast line")


@pytest.mark.parametrize("decoys", [0, 3, 100])
def test_a_pgpass_line_is_found_among_many_look_alikes_that_start_no_line(decoys: int) -> None:
    """Up to 64 candidates are judged one by one; past them (a junk text) one regex pass
    over the whole text judges them: the same lines are redacted either way."""
    text = "ratio 1:2:a:b:c " * decoys + "\n*:5432:app:bob:pgpass-Pw-1x2y\n" + "t 1:2:a:b:c" * decoys
    out = Redactor(DEFAULT_REDACT_KEYS).text(text)
    assert out == text.replace("pgpass-Pw-1x2y", REDACTED)


#: Texts of five or more ':'-separated fields that start a line but whose database and
#: user (the third and fourth fields) are both numbers: not ``.pgpass`` lines.
PGPASS_LOOK_ALIKES = [
    "1890-01-01T12:00:00+00:09:21",  # a UTC offset with seconds (LMT: zoneinfo before ~1900)
    "1890-01-01T12:00:00.250000-00:09:21",
    "00:00:01:23:456",  # a timecode
    "00:00:01:23:456:789",
    "00:11:22:33:44:55",  # a MAC address of digits
    "2001:4860:4860:0:0:0:0:8888",  # an IPv6 address of digits
]


@pytest.mark.parametrize("text", PGPASS_LOOK_ALIKES)
def test_timestamps_and_timecodes_are_not_taken_for_pgpass_lines(text: str) -> None:
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    for value in (text, f"at\n{text}\n", f"log:\n{text} started"):
        assert redactor.text(value) == value


@pytest.mark.parametrize(
    "line",
    [
        "localhost:5432:mydb:alice:{}",
        "10.0.0.5:6432:reporting:readonly:{}",
        "db.internal:5432:2024:app:{}",  # a database named by a number
        "db.internal:5432:app:1001:{}",  # a user named by a number
        "db.internal:5432:*:*:{}",
        "*:*:*:*:{}",
        "127.0.0.1:5432:12a:34:{}",
        "db.internal:5432:app:bob:20261207",  # a password of digits
    ],
)
def test_a_pgpass_line_with_numbers_in_it_is_still_redacted(line: str) -> None:
    secret = "pgpass-Pw-4n5m" if "{}" in line else "20261207"
    text = "# ~/.pgpass\n" + line.format(secret) + "\n"
    out = Redactor(DEFAULT_REDACT_KEYS).text(text)
    assert secret not in out
    assert out == text.replace(secret, REDACTED)


def test_a_datetime_with_seconds_in_its_offset_is_written_as_it_is(tmp_destination: Path) -> None:
    """The reviewer's shape through a chain: a ``datetime`` in a zone's LMT (its UTC
    offset has seconds) and a timecode, in the written inputs as given."""
    import datetime
    import zoneinfo

    when = datetime.datetime(1890, 1, 1, 12, 0, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    tracker = AsyncTracker(tmp_destination)
    try:
        RunnableLambda(lambda x: x, name="clip").invoke(
            {"when": when, "timecode": "00:00:01:23:456"}, config={"callbacks": [tracker]}
        )
    finally:
        tracker.close(timeout=30)
    lines = [
        orjson.loads(line) for p in tmp_destination.rglob("*.jsonl") for line in p.read_bytes().splitlines()
    ]
    (start,) = [line for line in lines if line["kind"] == "chain_start"]
    assert start["data"]["inputs"] == {"when": when.isoformat(), "timecode": "00:00:01:23:456"}
    assert when.isoformat().endswith("+00:09:21")


def test_a_private_key_streamed_token_by_token_is_withheld_to_its_end(
    tmp_destination: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 2048-bit key is ~1.6 KB, longer than the stream's tail that the full spec sees:
    once its first line is shown, every token is redacted up to the one that ends it."""
    caplog.set_level(logging.DEBUG, logger="asynctrack")
    lines = [
        f"MIIE{i:02d}" + "pQIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw" for i in range(26)
    ]
    key = "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END RSA PRIVATE KEY-----"
    answer = f"Here is the key you asked for:\n{key}\nKeep it safe."
    spool = tmp_path / "spool"
    tracker = AsyncTracker(tmp_destination, config=TrackerConfig(spool_dir=str(spool)))
    try:
        with OpenAIStub() as stub:
            chunks = list(chat_model(stub.url).stream("echo: " + answer, config={"callbacks": [tracker]}))
        assert "".join(str(chunk.content) for chunk in chunks) == answer
    finally:
        tracker.close(timeout=30)
    stream = _streamed(tmp_destination)
    assert stream.startswith("Here is the key you asked for:\n")
    assert stream.endswith("RSA PRIVATE KEY-----\nKeep it safe.")
    written = _written([tmp_destination, spool]) + caplog.text.encode()
    for line in lines:
        assert line[:10] not in stream and line.encode() not in written, line


@pytest.mark.parametrize(
    "answer",
    [
        "Call hf_hub_download(repo_id, filename) to fetch the weights.",
        "Set npm_config_registry before npm install.",
        "Lorem ipsum dolor sit amet, dapibus vitae.",
    ],
)
def test_identifiers_that_start_like_a_credential_stream_as_written(answer: str) -> None:
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    stream = StreamRedactor(redactor.text, redactor.key_rule)
    tokens = [answer[i : i + 3] for i in range(0, len(answer), 3)]
    assert "".join(stream.token("run", token) for token in tokens) == answer
