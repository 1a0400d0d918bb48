"""Channel vocabulary: channel names -> stable integer ids that travel with the data and the checkpoint."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


class UnknownChannelError(KeyError):
    """A channel name the model's vocabulary does not contain."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


UNKNOWN = "<unknown>"  # the shared identity of channels a vocabulary does not name (see `ChannelVocab.ids`)


class ChannelVocab:
    """An append-only list of channel names; a name's id is its position.

    ``capacity`` is the size of the model's channel-embedding table; `extend` refuses to grow past it. A
    vocabulary that holds `UNKNOWN` (pretraining with ``data.unknown_channel_prob > 0`` adds it and trains its
    embedding by presenting random channels under it) gives every name it does not know that identity.
    """

    def __init__(self, names: Iterable[str] = (), capacity: int = 256) -> None:
        self.names: list[str] = []
        self.capacity = capacity
        self.extend(names)

    def extend(self, names: Iterable[str]) -> ChannelVocab:
        for name in names:
            if name not in self.names:
                if len(self.names) >= self.capacity:
                    raise ValueError(f"channel vocabulary is full ({self.capacity}); cannot add {name!r}: raise "
                                     "model.encoder.channel_capacity (a new encoder) to the number of channels, "
                                     "or pass fewer")
                self.names.append(str(name))
        return self

    def ids(self, names: Sequence[str], add_unknown: bool = False) -> np.ndarray:
        """``[C]`` int64 ids of ``names``. A name not in the vocabulary gets the id of `UNKNOWN` when the
        vocabulary has it; otherwise it raises `UnknownChannelError`, or, with ``add_unknown``, is appended
        (its embedding row is then untrained until the encoder is fine-tuned)."""
        if add_unknown:
            self.extend(str(n) for n in names)
        index = {n: i for i, n in enumerate(self.names)}
        missing = [n for n in names if n not in index]
        if missing and UNKNOWN in index:
            return np.array([index.get(n, index[UNKNOWN]) for n in names], dtype=np.int64)
        if missing:
            raise UnknownChannelError(
                f"unknown channel(s) {missing}; the model knows {self.names}. "
                "Pretrain with these channels or extend the vocabulary (ChannelVocab.extend) and fine-tune."
            )
        return np.array([index[n] for n in names], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict:
        return {"names": list(self.names), "capacity": self.capacity}

    @classmethod
    def from_dict(cls, raw: dict) -> ChannelVocab:
        """The inverse of `to_dict`; a malformed dict (names not a list of unique strings, capacity not a
        positive int that holds them) is a ValueError."""
        names, capacity = raw["names"], raw["capacity"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
            raise ValueError(f"channel names must be a list of unique strings, got {names!r}")
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < max(1, len(names)):
            raise ValueError(f"capacity must be an int >= the {len(names)} names, got {capacity!r}")
        return cls(names, capacity)
