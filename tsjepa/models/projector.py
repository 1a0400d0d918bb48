"""The LeJEPA projector: a small MLP between the encoder and the loss.

The prediction loss and SIGReg act on the projector's output; probes, adapters and anomaly scores read the
encoder output before it (LeJEPA, arXiv 2511.08544, Sec. 5: "the projector is discarded after pretraining").
"""

from __future__ import annotations

from torch import Tensor, nn


class Projector(nn.Module):
    """``[..., D_in]`` -> ``[..., dims[-1]]``: Linear -> LayerNorm -> GELU for each hidden width, then a final
    Linear. ``dims`` lists the hidden widths and the output width (e.g. ``[512, 512, 64]``)."""

    def __init__(self, in_dim: int, dims: list[int]) -> None:
        super().__init__()
        if not dims or any(int(d) < 1 for d in dims):
            raise ValueError(f"projector widths must be a non-empty list of positive ints, got {dims}")
        layers: list[nn.Module] = []
        width = in_dim
        for hidden in dims[:-1]:
            layers += [nn.Linear(width, int(hidden)), nn.LayerNorm(int(hidden)), nn.GELU()]
            width = int(hidden)
        layers.append(nn.Linear(width, int(dims[-1])))
        self.net = nn.Sequential(*layers)
        self.out_dim = int(dims[-1])

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
