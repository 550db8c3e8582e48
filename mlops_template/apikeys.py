"""``python -m mlops_template.apikeys``: create, list and revoke the API keys of the front and service.

``create NAME --file PATH`` prints a new key once on stdout (nothing else goes there, so
``KEY=$(python -m mlops_template.apikeys create ci --file keys.txt)`` works) and appends its
SHA-256 digest and name to the file, created with mode 0600. ``list`` prints the names only;
``revoke NAME`` removes one; a running service picks both changes up without a restart.
``--file`` defaults to ``$API_KEYS_FILE``. The logic lives in :mod:`mlops_template.core.apikeys`.
"""

from __future__ import annotations

import argparse
import os
import sys

from mlops_template.core.apikeys import KeyFileError, create_key, list_names, revoke_key

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and create, list or revoke a key; messages for people go to stderr."""
    parser = argparse.ArgumentParser(prog="python -m mlops_template.apikeys",
                                     description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for command, helptext in (("create", "make a key, print it once, store its digest"),
                              ("list", "print the names of the keys"),
                              ("revoke", "remove a key by name")):
        sub = commands.add_parser(command, help=helptext)
        if command != "list":
            sub.add_argument("name", help="the key's name: 1-64 of A-Z a-z 0-9 . _ -")
        sub.add_argument("--file", default=os.environ.get("API_KEYS_FILE"),
                         help="the key file (default: $API_KEYS_FILE)")
    args = parser.parse_args(argv)
    if not args.file:
        parser.error("name the key file with --file or API_KEYS_FILE")
    try:
        if args.command == "create":
            key = create_key(args.file, args.name)
            print(key, flush=True)
            print(f"key {args.name!r} added to {args.file}; it is shown only this once", file=sys.stderr)
        elif args.command == "list":
            for name in list_names(args.file):
                print(name)
        else:
            revoke_key(args.file, args.name)
            print(f"key {args.name!r} revoked in {args.file}", file=sys.stderr)
    except KeyFileError as exc:
        print(f"apikeys {args.command} failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
