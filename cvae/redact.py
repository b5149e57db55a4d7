"""Secrets out of everything a run writes or prints: config values under secret-looking keys,
and passwords in URLs (``postgresql://user:***@host/db``).

Used by the spec dump (``spec.yaml``, ``cvae spec show``), checkpoints, W&B configs, error
messages and the sweep's storage URLs (docs/reliability.md, section 7).
"""

from __future__ import annotations

import re
from typing import Any

# Config keys whose (string) values are hidden; matched anywhere in the lower-cased dotted key.
SECRET_KEY_PARTS = ("password", "passwd", "api_key", "apikey", "token", "secret", "credential")
# scheme://user:PASSWORD@host -- the password may itself hold "@", so match up to the last "@"
# before the path.
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:@/\s]*:)(?P<pw>[^\s/]*)@")


def is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(part in lowered for part in SECRET_KEY_PARTS)


def redact(value: Any, key: str = "") -> Any:
    """Hide secrets in a config value (recursing into dicts, lists and tuples).

    - strings under a key naming a secret (``password``, ``api_key``, ``token``, ``secret``, ...)
      become ``"***"``; numbers and booleans there are kept (``num_tokens`` is no secret);
    - passwords in URLs are masked: ``postgresql://user:pw@host/db`` -> ``postgresql://user:***@host/db``.
    """
    if isinstance(value, dict):
        return {k: redact(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v, key) for v in value)
    if isinstance(value, (str, bytes)) and value and is_secret_key(key):
        return "***"
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\g<head>***@", value)
    return value
