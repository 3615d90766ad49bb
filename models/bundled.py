"""Small networks shipped inside the repository: a folder of ``weights.pt`` + ``card.json``.

The lung segmenter (:mod:`models.lungseg`) and the view check (:mod:`models.viewcheck`) load the
same way: the card says how to build the network and which sha256 its weights have, a file that
does not match is refused (a truncated or swapped file must not silently change masks or let
laterals through), float16 weights are widened to float32, and a service loads each once per
process. One definition of those steps, here.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from models.files import sha256_file

WEIGHTS_NAME = "weights.pt"
"""The weights of a shipped network: a float16 or float32 state dict."""
CARD_NAME = "card.json"
"""Its card: how to build it, ``weights_sha256``, its held-out figures."""

NetT = TypeVar("NetT", bound=nn.Module)
T = TypeVar("T")


def read_card(folder: Path) -> dict[str, Any]:
    """The folder's ``card.json``."""
    card: dict[str, Any] = json.loads((folder / CARD_NAME).read_text(encoding="utf-8"))
    return card


def load_checked(folder: Path, card: dict[str, Any], net: NetT) -> NetT:
    """``net`` with the folder's weights, in eval mode; ``ValueError`` when their sha256 is not
    the card's ``weights_sha256``."""
    weights = folder / WEIGHTS_NAME
    digest = sha256_file(weights)
    if digest != card.get("weights_sha256"):
        raise ValueError(
            f"{weights}: sha256 {digest} does not match the card's {card.get('weights_sha256')}"
        )
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return net.eval()


def load_once(loader: Callable[[], T]) -> Callable[[], T]:
    """A thread-safe accessor that calls ``loader`` the first time and returns its result after."""
    lock = threading.Lock()
    loaded: list[T] = []

    def get() -> T:
        with lock:
            if not loaded:
                loaded.append(loader())
            return loaded[0]

    get.__doc__ = f"{loader.__name__}(), loaded once per process (thread-safe)."
    return get
