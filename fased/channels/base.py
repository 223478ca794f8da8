"""What every channel hands the routing layer: one inbound message, already identified."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Inbound:
    channel: str          # "telegram"
    account: str          # account name, "default" unless --account
    peer_kind: str        # "dm" | "group"
    peer_id: str          # chat id as string
    sender_id: str        # user id as string
    sender_name: str      # display name / @username, for humans only
    text: str
    mentioned: bool       # bot @mentioned or replied-to (groups)
    message_id: str       # channel's message id
    update_id: str        # channel's update/offset id, for the log
