"""Bearer tokens with scopes: who may read (recommend, user info, metrics) and who may also write events.

Tokens come from a file (`--token-file`, one `SCOPE:TOKEN` a line, `#` comments) or from the
environment (`SINKREC_SERVE_TOKENS`, comma-separated `SCOPE:TOKEN`). Scopes: `read`, or `write`
(which includes read). Only SHA-256 digests of the tokens are held, every presented token is
compared with every known one in constant time, and no message ever quotes a token.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import SinkrecError

SCOPES = ("read", "write")
MIN_TOKEN_CHARS = 16
ENV = "SINKREC_SERVE_TOKENS"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class Tokens:
    """Known token digests and their scopes."""

    entries: tuple[tuple[bytes, str], ...]

    @classmethod
    def parse(cls, text: str, where: str, separator: str = "\n") -> Tokens:
        entries = []
        for n, raw in enumerate(text.split(separator), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            scope, colon, token = line.partition(":")
            token = token.strip()
            if not colon or scope.strip() not in SCOPES:
                raise SinkrecError(f"{where}, entry {n}: expected SCOPE:TOKEN with SCOPE read or write")
            if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
                raise SinkrecError(f"{where}, entry {n}: a token needs at least {MIN_TOKEN_CHARS} characters "
                                   "and no spaces (e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`)")
            entries.append((_digest(token), scope.strip()))
        if not entries:
            raise SinkrecError(f"{where}: no token (expected lines of SCOPE:TOKEN)")
        return cls(tuple(entries))

    @classmethod
    def load(cls, token_file: str | Path | None = None, environ: dict | None = None) -> Tokens | None:
        """Tokens from the file and/or the environment; None when neither gives any (no auth)."""
        environ = os.environ if environ is None else environ
        found: list[tuple[bytes, str]] = []
        if token_file is not None:
            path = Path(token_file)
            try:
                size = path.stat().st_size
                if size > 1 << 20:
                    raise SinkrecError(f"token file {path}: {size:,} bytes, more than 1 MiB")
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise SinkrecError(f"token file {path}: cannot read it ({type(exc).__name__})") from None
            found += cls.parse(text, f"token file {path}").entries
        if environ.get(ENV, "").strip():
            found += cls.parse(environ[ENV], f"environment variable {ENV}", ",").entries
        return cls(tuple(found)) if found else None

    def scope(self, token: str) -> str | None:
        """The token's scope, or None; looks at every entry whatever matches (no early exit)."""
        digest, best = _digest(token), None
        for known, scope in self.entries:
            if hmac.compare_digest(digest, known) and best != "write":
                best = scope
        return best


def allows(scope: str | None, needed: str) -> bool:
    return scope == "write" or (scope == "read" and needed == "read")
