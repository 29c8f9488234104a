"""Sequential Context Module (paper §3.2, Eq. 1-2, Figure 3).

After a stage, each branch's map is global-average-pooled to ``x_t`` (C channels); one recurrent cell runs over
the sequence face → body → scene with ``h_0 = 0``; its output ``h_t`` is broadcast over H×W and added to that
branch's map as a per-channel bias.

Cells (chosen by string key, one constructor contract ``cell(channels)``, called as
``cell(x, state) -> (h, state)``):

- ``gru``: Eq. 2 exactly as written. Unlike ``torch.nn.GRUCell`` (which applies the reset gate *after* the
  linear map of h, ``r * (W_hn h + b_hn)``), the paper multiplies ``h_{t-1}`` by ``r_t`` *before* the linear
  map: ``ĥ_t = tanh(W_h [h_{t-1} ⊗ r_t, x_t] + b_h)``. Parameters: 3 · (2C·C + C) = 6C² + 3C.
- ``rnn``: the tanh RNN (``torch.nn.RNNCell``), what the authors' released code runs. 2C² + 2C.
- ``lstm``: ``torch.nn.LSTMCell``; the state is (h, c), the bias added to the map is h. 8C² + 8C.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class PaperGRUCell(nn.Module):
    """The GRU-like cell of Eq. 2, with [h_{t-1}, x_t] concatenated in that order."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.reset_gate = nn.Linear(2 * channels, channels)  # W_r, b_r
        self.update_gate = nn.Linear(2 * channels, channels)  # W_z, b_z
        self.candidate = nn.Linear(2 * channels, channels)  # W_h, b_h

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hx = torch.cat([h, x], dim=1)
        r = torch.sigmoid(self.reset_gate(hx))
        z = torch.sigmoid(self.update_gate(hx))
        h_hat = torch.tanh(self.candidate(torch.cat([h * r, x], dim=1)))
        h = (1 - z) * h + z * h_hat
        return h, h


class RNNCell(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.cell = nn.RNNCell(channels, channels, nonlinearity="tanh")

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.cell(x, h)
        return h, h


class LSTMCell(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(channels, channels)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, State]:
        h, c = self.cell(x, state)
        return h, (h, c)


SCM_CELLS: dict[str, Callable[[int], nn.Module]] = {"gru": PaperGRUCell, "rnn": RNNCell, "lstm": LSTMCell}


def scm_parameter_count(cell: str, channels: int) -> int:
    """Closed-form parameter count of one SCM (tests check the modules against it)."""
    c = channels
    return {"gru": 6 * c * c + 3 * c, "rnn": 2 * c * c + 2 * c, "lstm": 8 * c * c + 8 * c}[cell]


class SequentialContextModule(nn.Module):
    """One SCM at one insertion point: a cell shared along the face → body → scene sequence."""

    def __init__(self, channels: int, cell: str = "gru") -> None:
        super().__init__()
        if cell not in SCM_CELLS:
            raise ValueError(f"unknown SCM cell {cell!r}; valid cells: {sorted(SCM_CELLS)}")
        self.kind = cell
        self.cell = SCM_CELLS[cell](channels)

    def forward(self, maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        x0 = maps[0]
        zeros = x0.new_zeros(x0.shape[0], x0.shape[1])
        state: State = (zeros, zeros) if self.kind == "lstm" else zeros  # h_0 = 0
        out = []
        for fmap in maps:  # face, body, scene: the order of Eq. 1
            h, state = self.cell(fmap.mean(dim=(2, 3)), state)  # (B, C)
            out.append(fmap + h[:, :, None, None])  # per-channel bias broadcast over H×W
        return out
