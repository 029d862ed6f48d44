"""Choosing how a run is tracked in Weights & Biases: online, offline or off."""

import netrc
import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

WandbMode = Literal["auto", "online", "offline", "off"]


def wandb_logged_in() -> bool:
    """Tell whether W&B credentials exist: ``WANDB_API_KEY`` or a netrc entry for the W&B host.

    Only the presence of a key is checked, never its value, and nothing is sent anywhere.
    """
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(requested: WandbMode) -> Literal["online", "offline", "off"]:
    """Turn ``--wandb`` into a mode. ``auto`` follows ``WANDB_MODE`` when set, and otherwise
    logs online when credentials exist and offline when they do not."""
    if requested != "auto":
        return requested
    env_mode = os.environ.get("WANDB_MODE", "").lower()
    if env_mode in ("offline", "dryrun"):
        return "offline"
    if env_mode in ("disabled", "off"):
        return "off"
    if env_mode == "online":
        return "online"
    return "online" if wandb_logged_in() else "offline"
