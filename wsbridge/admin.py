"""``wsbridge kick``: close connections by user, channel or group, in every process.

Thin: parses options and calls :func:`wsbridge.identity.kick` (or
:func:`~wsbridge.identity.revoke_user` with ``--revoke``) on the layer the
options name, as ``wsbridge status`` finds it::

    wsbridge kick --user 42 --reason "account under review" --layer redis://127.0.0.1:6379
    wsbridge kick --group chat.lobby --reason "room closed"
    wsbridge kick --user 42 --revoke     # also refuse its older connect tokens

The clients see the close code (4409 kicked, 4403 revoked) and the reason.
Needs a shared layer (Redis): with the in-memory layer there is nobody else
to reach.
"""

from __future__ import annotations

import argparse
import sys

from .exceptions import WSBridgeError
from .status import _add_layer_arguments, layer_from_args

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``wsbridge kick``."""
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--user", metavar="ID", help="every connection of this user id")
    target.add_argument("--channel", metavar="NAME", help="one connection, by its channel name")
    target.add_argument("--group", metavar="NAME", help="every member of this group")
    parser.add_argument(
        "--reason",
        default="removed by an operator",
        help="shown to the client (at most 120 characters)",
    )
    parser.add_argument(
        "--revoke",
        action="store_true",
        help="with --user: revoke (4403, older tokens refused) instead of kick",
    )
    _add_layer_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Send the close to every process; 0 when sent, 2 on bad options or no layer."""
    from . import identity

    if args.revoke and args.user is None:
        print("wsbridge kick: --revoke needs --user", file=sys.stderr)
        return 2
    try:
        layer = layer_from_args(args)
    except WSBridgeError as exc:
        print(f"wsbridge kick: {exc}", file=sys.stderr)
        return 2
    try:
        if args.revoke:
            identity.revoke_user(args.user, args.reason, layer=layer)
        else:
            identity.kick(
                user=args.user,
                channel=args.channel,
                group=args.group,
                reason=args.reason,
                layer=layer,
            )
    except (WSBridgeError, ValueError) as exc:
        print(f"wsbridge kick: {exc}", file=sys.stderr)
        return 2
    finally:
        layer.close()
    target = args.user or args.channel or args.group
    print(f"sent: {'revoke' if args.revoke else 'kick'} {target} ({args.reason})")
    return 0
