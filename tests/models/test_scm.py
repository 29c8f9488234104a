"""Sequential Context Module (paper §3.2, Eq. 2): sibnet.models.scm."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sibnet.models.backbone import STAGE_CHANNELS
from sibnet.models.scm import PaperGRUCell, SequentialContextModule, scm_parameter_count


def _np_sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def test_gru_cell_is_equation_2_as_written():
    """Eq. 2 by hand in numpy: reset gate multiplies h_{t-1} BEFORE the candidate's linear map."""
    torch.manual_seed(1)
    c = 3
    cell = PaperGRUCell(c)
    x = torch.randn(2, c)
    h = torch.randn(2, c)
    wr, br = cell.reset_gate.weight.detach().numpy(), cell.reset_gate.bias.detach().numpy()
    wz, bz = cell.update_gate.weight.detach().numpy(), cell.update_gate.bias.detach().numpy()
    wh, bh = cell.candidate.weight.detach().numpy(), cell.candidate.bias.detach().numpy()
    hn, xn = h.numpy().astype(np.float64), x.numpy().astype(np.float64)
    expected = []
    for i in range(2):
        hx = np.concatenate([hn[i], xn[i]])
        r = _np_sigmoid(wr @ hx + br)
        z = _np_sigmoid(wz @ hx + bz)
        h_hat = np.tanh(wh @ np.concatenate([hn[i] * r, xn[i]]) + bh)
        expected.append((1 - z) * hn[i] + z * h_hat)
    got, _ = cell(x, h)
    np.testing.assert_allclose(got.detach().numpy(), np.stack(expected), rtol=1e-5, atol=1e-6)

    # ... which is not torch's GRUCell, whose reset gate acts after the linear map: r * (W_hn h + b_hn).
    # Map the same weights onto nn.GRUCell (its z plays the role of our 1 - z, hence the sign flip): with
    # everything else equal, the two differ only by where r is applied.
    ref = nn.GRUCell(c, c)
    w = {g: getattr(cell, g).weight.detach() for g in ("reset_gate", "update_gate", "candidate")}
    b = {g: getattr(cell, g).bias.detach() for g in w}
    with torch.no_grad():
        ref.weight_hh.copy_(
            torch.cat([w["reset_gate"][:, :c], -w["update_gate"][:, :c], w["candidate"][:, :c]])
        )
        ref.weight_ih.copy_(
            torch.cat([w["reset_gate"][:, c:], -w["update_gate"][:, c:], w["candidate"][:, c:]])
        )
        ref.bias_ih.copy_(torch.cat([b["reset_gate"], -b["update_gate"], b["candidate"]]))
        ref.bias_hh.zero_()
        torch_out = ref(x, h)
        # With the reset gate forced open (r = 1) the two cells agree, so the mapping above is right ...
        cell.reset_gate.bias.fill_(1e4)
        ref.bias_ih[:c].fill_(1e4)
        torch.testing.assert_close(ref(x, h), cell(x, h)[0])
    # ... and with a real reset gate they differ.
    assert not torch.allclose(torch_out, got, atol=1e-4)


def test_scm_runs_face_body_scene_from_zero_state():
    torch.manual_seed(2)
    scm = SequentialContextModule(4, "gru")
    maps = [torch.randn(2, 4, 3, 3) for _ in range(3)]
    out = scm(maps)
    h = torch.zeros(2, 4)
    for fmap, o in zip(maps, out):
        h, _ = scm.cell(fmap.mean(dim=(2, 3)), h)
        torch.testing.assert_close(o, fmap + h[:, :, None, None])
    # the bias is constant over H×W
    delta = out[2] - maps[2]
    assert torch.allclose(delta, delta[:, :, :1, :1].expand_as(delta))


@pytest.mark.parametrize("cell", ["gru", "rnn", "lstm"])
@pytest.mark.parametrize("channels", STAGE_CHANNELS)
def test_scm_parameter_count_matches_formula(cell: str, channels: int):
    scm = SequentialContextModule(channels, cell)
    assert sum(p.numel() for p in scm.parameters()) == scm_parameter_count(cell, channels)


def test_unknown_scm_cell_lists_valid():
    with pytest.raises(ValueError, match=r"valid cells: \['gru', 'lstm', 'rnn'\]"):
        SequentialContextModule(8, "transformer")
