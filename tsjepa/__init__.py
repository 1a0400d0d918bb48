"""tsjepa: LeJEPA-style pretraining (JEPA latent prediction + SIGReg) for time-series encoders."""

import os

# torch's OpenMP threads spin while waiting by default; on small shared machines that makes every op
# ~17x slower when another process keeps a core busy. Must be set before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from tsjepa.api import pretrain  # noqa: E402
from tsjepa.checkpoint import from_pretrained, save_pretrained  # noqa: E402
from tsjepa.data.batch import Batch  # noqa: E402
from tsjepa.data.timeseries import TimeSeries, as_timeseries  # noqa: E402
from tsjepa.embedding import embed, pooled  # noqa: E402
from tsjepa.sigreg import sigreg  # noqa: E402

__all__ = [
    "Batch", "TimeSeries", "as_timeseries", "embed", "from_pretrained", "pooled", "pretrain", "save_pretrained", "sigreg",
]
__version__ = "0.1.0"
