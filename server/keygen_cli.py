"""``pointillist keygen``: a new API key, and the config entry that stores its hash."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from server.auth import Role, hash_key, new_key


def register_keygen(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "keygen",
        help="print a new API key and the [[server.api_keys]] entry holding its hash",
        description=(
            "Print a new random API key once, and the TOML entry for the server config. "
            "The server stores only the SHA-256; give the key to the caller, who sends it as "
            "'authorization: Bearer <key>' (pointillist CLI: $POINTILLIST_API_KEY or "
            "--api-key-file). With --hash-stdin, hash a key read from standard input instead."
        ),
    )
    parser.add_argument("--name", default="caller", help="the caller's identity (default: caller)")
    parser.add_argument("--role", choices=[role.value for role in Role], default=Role.USER.value)
    parser.add_argument(
        "--hash-stdin", action="store_true", help="hash the key on standard input; make none"
    )
    parser.set_defaults(func=run_keygen)


def run_keygen(args: argparse.Namespace) -> int:
    if args.hash_stdin:
        key = sys.stdin.readline().strip()
        if not key:
            print("pointillist keygen: no key on standard input", file=sys.stderr)
            return 2
    else:
        key = new_key()
        print(f"key:    {key}")
        print("        (shown once: the server keeps only its hash)")
    print(f"sha256: {hash_key(key)}")
    print()
    print("[[server.api_keys]]")
    print(f'name = "{args.name}"')
    print(f'role = "{args.role}"')
    print(f'sha256 = "{hash_key(key)}"')
    return 0
