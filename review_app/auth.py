"""Optional login for the app (``--auth FILE``): one ``user:secret`` per line, the secret plain or hashed.

A hashed secret looks like ``pbkdf2_sha256$<iterations>$<salt hex>$<hash hex>``; make one with
``python -m review_app.auth USER`` (asks for the password). Blank lines and ``#`` comments are ignored.
The logged-in name becomes the reviewer of every review saved in that session.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

SCHEME = "pbkdf2_sha256"
ITERATIONS = 200_000


def hash_password(password: str, iterations: int = ITERATIONS) -> str:
    """A salted PBKDF2-SHA256 hash of ``password`` in the auth file's format."""
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"{SCHEME}${iterations}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (hashed or plain), in constant time."""
    if stored.startswith(SCHEME + "$"):
        try:
            _, iterations, salt, expected = stored.split("$")
            digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), bytes.fromhex(salt), int(iterations))
        except ValueError:
            return False
        return hmac.compare_digest(digest.hex(), expected)
    return hmac.compare_digest(password.encode("utf-8"), stored.encode("utf-8"))


def load_auth(path: str | Path) -> Callable[[str, str], bool]:
    """Read an auth file and return the check Gradio calls with (username, password).

    Raises:
        ValueError: a line without ``user:secret``, or no users at all.
    """
    users: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, secret = line.partition(":")
        if not sep or not user.strip() or not secret:
            raise ValueError(f"{path}:{number}: expected 'user:password'")
        users[user.strip()] = secret
    if not users:
        raise ValueError(f"{path}: no users")

    def check(username: str, password: str) -> bool:
        stored = users.get(username)
        return stored is not None and verify_password(password, stored)

    return check


def main(argv: list[str] | None = None) -> int:
    """``python -m review_app.auth USER``: print an auth-file line with a hashed password."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m review_app.auth USER", file=sys.stderr)
        return 2
    password = getpass.getpass(f"password for {args[0]}: ")
    print(f"{args[0]}:{hash_password(password)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
