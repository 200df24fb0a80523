"""Redaction: what counts as a credential in an event, and how it is found in linear time.

The spec (docs/REDACTION.md says the same for users)
-----------------------------------------------------

Every text the tracker writes passes here first: the captured body of an event
(its JSON text, so keys and every string value inside), the envelope's ``name``,
error messages and tracebacks, streamed tokens (joined per run) and the run's
parameters. A redacted value becomes ``[REDACTED]``.

1. **Key rules.** A key is split into words (``clientSecret`` -> ``client_secret``,
   ``x-api-key`` -> ``x_api_key``, ``PGPASSWORD`` -> ``pgpassword``) and the
   ``redact_keys`` regex is searched in that normalized form. The default rule
   (``DEFAULT_REDACT_KEYS`` in ``_config``) matches any word containing
   ``password``/``passwd``/``passphrase``/``pwd``/``secret``/``credential``/
   ``cookie``; ``auth``, ``authorization``, ``authentication``; ``<api|private|
   access|secret|signing|encryption|master|account|client|app|session>_key(s)``
   (glued too: ``openaiapikey``); and keys ending in ``token`` (``accessToken``,
   ``aws_session_token``), except the tokenizer's special tokens (``eos_token``
   ...). ``max_tokens``, ``token_usage``, ``total_tokens`` do not match.
   A key rule applies wherever a key meets a value:
   - JSON structure: ``{"dbPassword": "x"}`` -> the value (a string or number; a
     list or object under such a key is replaced whole). LangChain's serialized
     secret marker ``{"lc": 1, "type": "secret", "id": [...]}`` names an
     environment variable, holds no secret, and is kept as it is.
   - text: ``key=value``, ``key: value``, ``"key": "value"`` (JSON text inside a
     string, such as a tool call's ``arguments``), ``key='value'``, header dumps
     (``Authorization: Bearer xyz``, ``x-api-key: xyz``), URL queries
     (``?access_token=xyz``). The value is the quoted string, or else the run of
     characters up to whitespace, a quote, ``,``, ``;``, ``&``, ``)``, ``}``,
     ``]``, ``<``, ``>`` or a backslash; an auth scheme word (``Bearer``,
     ``Basic``, ``Token``, ``Digest``) before it is kept. Values of any length.
2. **Value detectors**, anywhere in any text: the credential formats of the public
   rule sets (gitleaks' default rules, detect-secrets' plugins, GitHub secret
   scanning's partner patterns) that LangChain events can carry, by family:
   - AI providers: ``sk-...`` (OpenAI, Anthropic, Langfuse), ``pk-lf-``, ``lsv2_``,
     ``ls__``, ``hf_``, ``gsk_``, ``xai-``, ``r8_``, ``pplx-``, ``tvly-``, ``pcsk_``;
   - cloud keys and signed URLs: AWS key ids (``AKIA``/``ASIA``/``ABIA``/``ACCA`` +
     16), bare AWS secret access keys (below), ``X-Amz-Signature=``, SigV2
     ``Signature=``, ``X-Goog-Signature=``, Azure SAS ``sig=``, ``AIza...``,
     ``ya29.``, ``GOCSPX-``;
   - connection strings: the password of a URL (``scheme://user:pw@host``), Oracle
     ``jdbc:oracle:thin:user/pw@``;
   - SaaS tokens: GitHub (``ghp_ gho_ ghu_ ghs_ ghr_ github_pat_``), GitLab
     (``glpat-`` and its other token prefixes), Slack ``xox?-``/``xapp-`` and webhook
     URLs, Stripe ``sk_live_``/``sk_test_``/``rk_*``/``whsec_``, SendGrid ``SG.x.y``,
     npm ``npm_``, PyPI ``pypi-AgEIcHlwaS5vcmc...``, Twilio ``SK`` + 32 hex, Mailgun
     ``key-``, Mailchimp ``<32 hex>-usN``, Shopify ``shp??_``, Square ``sq0???-``/
     ``EAA...``, New Relic ``NRAK-``/``NRII-``/``NRJS-``/``...NRAL``, Heroku ``HRKU-``,
     DigitalOcean ``do?_v1_``, ``/api/webhooks/<id>/<token>`` (Discord's),
     Telegram bot tokens, Atlassian ``ATATT3``, Linear ``lin_api_``, Notion
     ``ntn_``/``secret_``, Airtable ``pat<14>.<64 hex>``, Postman ``PMAK-``, Doppler
     ``dp.pt.``, Databricks ``dapi``, Vault ``hvs.``/``hvb.``/``hvr.``, Sentry
     ``sntry?_``, age ``AGE-SECRET-KEY-1``;
   - private keys: PEM blocks (``-----BEGIN ... PRIVATE KEY-----`` to its END line,
     or to the end of the string), ssh.com's ``---- BEGIN SSH2 ... PRIVATE KEY ----``
     blocks, PuTTY key files (to the end of the string);
   - credential files: ``.netrc`` ``machine h [login u] password p`` (one line or
     several), ``.pgpass`` lines ``host:port:db:user:password`` starting a line
     (``.npmrc``, ``.pypirc`` and Docker's ``auth`` are key rules);
   - tokens in transit: JWTs (``eyJ...eyJ...``), ``Bearer <16+ chars>``.
   A bare AWS secret access key is a run of exactly 40 ``[A-Za-z0-9/+]`` with an
   upper-case letter, a lower-case letter and a digit, not part of a longer
   base64 run, and either holding ``/`` or ``+`` or having ``aws``, ``secret`` or
   an AWS key id within the 120 bytes before it (a random 40-character id
   with neither is left alone).
3. ``redact_patterns``: your own regexes, run on every text as bytes (keep them
   linear: a possessive or bounded quantifier, no nested repetition).

Not caught: a credential with no format of its own and no credential-like key
before it (Datadog's and Azure AI's hex keys, Cohere's, Mistral's, a PIN), a key
and value separated only by a space (``--password hunter2``), ``.netrc``
``default`` entries, a ``.pgpass`` line that does not start a line, a value under
a credential key that is itself JSON text of an object or list inside a string
(the keys inside it are still checked), a secret split by an encoding the scan
cannot see (base64 of a ``bytes`` value that is not text is written as ``latin1``
text and scanned, but base64 *inside* a string is not decoded), and in a token
stream, the part of a format without a distinctive prefix written by earlier
tokens before the stream showed it to be a credential (see ``StreamRedactor``).

Linear time
-----------

Each scan is a fixed number of passes over the text with C code (``bytes.find``,
``bytes.translate``, ``re`` patterns built so that every match attempt can only
start at a literal prefix or a word start, with possessive or bounded quantifiers,
so no attempt re-reads what an earlier one consumed). The value detectors find
the runs of token or base64 characters in a translated copy of the text (a regex
with a literal prefix) and match the formats at each run with one C call that
``map`` makes; only the first few runs of a text are judged in Python, where that
costs less. Python runs per *hit*, and a hit consumes the text it covers. The
hostile-corpus benchmark (``benchmarks/hostile.py``) checks 256 KiB fields against
20 ms.
"""

from __future__ import annotations

from ._common import REDACTED
from ._keys import KeyRule, normalize_key
from ._redactor import Redactor
from ._stream import StreamRedactor

__all__ = ["REDACTED", "KeyRule", "Redactor", "StreamRedactor", "normalize_key"]
