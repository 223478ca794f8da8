"""`fased channel`: chat apps that reach your agents."""

from __future__ import annotations

import click

from fased.commands.channel_routes import ROUTE_COMMANDS
from fased.commands.main import FasedGroup


@click.group(cls=FasedGroup)
def channel() -> None:
    """Channels: which agent answers a chat app's messages, and who may talk.

    \b
    Examples:
      fased channel bind --channel telegram --peer dm:123456789 --agent ops
      fased channel routes --explain telegram/dm:123456789
    """


for _command in ROUTE_COMMANDS:
    channel.add_command(_command)
