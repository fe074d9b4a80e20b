"""Squash (Eq. 3) and dynamic routing (Algorithm 1, Sabour et al. 2017) to the instantiation vectors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from piade_lib.presets import ROUTING_WEIGHT_INITS  # declared once, in presets


def squash(s: torch.Tensor, a: float = 1.0, dim: int = -1, eps: float = 1e-8) -> torch.Tensor:
    """Eq. 3: ``v = |s|^2 / (a + |s|^2) * s / |s|``; ``eps`` keeps the gradient finite at ``s = 0``.

    The norm of the result is in [0, 1) for every ``a > 0``.
    """
    sq = (s * s).sum(dim=dim, keepdim=True)
    return s * (sq / (a + sq)) / torch.sqrt(sq + eps)


class DynamicRouting(nn.Module):
    """Route ``n_in`` primary capsules (dim ``in_dim``) to ``n_out`` vectors (dim ``out_dim``).

    Predictions ``u_hat[j|i] = W[j, i] @ u_i`` with ``W`` of shape (n_out, n_in, out_dim, in_dim).
    Routing logits start at 0; each iteration: ``c = softmax(b)`` over the output capsules,
    ``s_j = sum_i c_ij u_hat[j|i]``, ``v_j = squash(s_j)``, ``b_ij += u_hat[j|i] . v_j``.
    With ``detach`` the predictions are detached in all iterations but the last (released code),
    so gradients reach ``W`` only through the final weighted sum.

    ``weight_init``: ``"orthogonal"`` makes every out_dim x in_dim map ``W[j, i]`` semi-orthogonal
    (``W^T W = I``: predictions keep the norm of ``u_i``; summed over hundreds of capsules this
    saturates the squash and the couplings at initialisation); ``"orthogonal_fanin"`` is the same
    scaled by ``1/sqrt(n_in)`` (``W^T W = I / n_in``), so ``s_j`` keeps the scale of one capsule;
    ``"randn0.01"`` is the released code's ``0.01 * randn``.
    """

    def __init__(
        self,
        n_in: int,
        in_dim: int = 8,
        n_out: int = 2,
        out_dim: int = 64,
        *,
        iterations: int = 3,
        detach: bool = False,
        squash_a: float = 1.0,
        weight_init: str = "orthogonal",
    ) -> None:
        super().__init__()
        if iterations < 1:
            raise ValueError(f"routing needs at least 1 iteration; got {iterations}")
        if n_out < 1:
            raise ValueError(f"routing needs at least 1 output capsule; got {n_out}")
        self.n_in, self.in_dim, self.n_out, self.out_dim = n_in, in_dim, n_out, out_dim
        self.iterations = iterations
        self.detach = detach
        self.squash_a = squash_a
        self.weight_init = weight_init
        self.W = nn.Parameter(torch.empty(n_out, n_in, out_dim, in_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight_init in ("orthogonal", "orthogonal_fanin"):
            gain = 1.0 if self.weight_init == "orthogonal" else self.n_in**-0.5
            with torch.no_grad():
                self.W.copy_(gain * _orthogonal_matrices(self.W.shape))
        elif self.weight_init == "randn0.01":
            with torch.no_grad():
                self.W.normal_(0.0, 0.01)
        else:
            raise ValueError(f"unknown routing weight init {self.weight_init!r}; valid: {list(ROUTING_WEIGHT_INITS)}")

    def forward(self, u: torch.Tensor, iterations: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """u: (B, n_in, in_dim) -> (v: (B, n_out, out_dim), c: (B, n_in, n_out) final coupling)."""
        if u.dim() != 3 or u.shape[1:] != (self.n_in, self.in_dim):
            raise ValueError(f"routing expects primary capsules (B, {self.n_in}, {self.in_dim}); got {tuple(u.shape)}")
        r = self.iterations if iterations is None else iterations
        if r < 1:
            raise ValueError(f"routing needs at least 1 iteration; got {r}")
        with torch.autocast(device_type=u.device.type, enabled=False):  # squared norms overflow in float16
            return self._route(u.to(self.W.dtype), r)

    def _route(self, u: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
        # Algorithm 1 without materialising the predictions u_hat (B x n_in x n_out x out_dim values):
        # since u_hat[j|i] = W[j, i] u_i is linear, s_j = sum_i c_ij W[j, i] u_i is one matrix product of
        # the (c_ij u_i) with W, and the agreement u_hat[j|i] . v_j = u_i . (W[j, i]^T v_j) another one.
        # Equal to the textbook form in exact arithmetic (float32 rounding differs); on a CPU the step
        # is several times faster, forward and backward, because no tensor larger than B x n_out x n_in x
        # in_dim is formed. Layouts: W as (n_out, n_in * in_dim, out_dim); logits and couplings as
        # (n_out, B, n_in).
        n_out, n_in, out_dim, in_dim = self.W.shape
        bsz = u.shape[0]
        w = self.W.transpose(2, 3).reshape(n_out, n_in * in_dim, out_dim)  # w[j, (i, k), d] = W[j, i, d, k]
        w_routing, u_routing = (w.detach(), u.detach()) if self.detach else (w, u)
        b = u.new_zeros(n_out, bsz, n_in)
        for it in range(r):
            c = F.softmax(b, dim=0)  # over the output capsules
            last = it == r - 1
            w_it, u_it = (w, u) if last else (w_routing, u_routing)
            cu = (c.unsqueeze(-1) * u_it.unsqueeze(0)).reshape(n_out, bsz, n_in * in_dim)  # c_ij u_i
            v = squash(torch.bmm(cu, w_it), self.squash_a)  # (n_out, B, out_dim)
            if not last:  # the update after the last iteration would not be used
                wv = torch.bmm(v, w_it.transpose(1, 2)).view(n_out, bsz, n_in, in_dim)  # W[j, i]^T v_j
                b = b + (wv * u_it.unsqueeze(0)).sum(-1)  # b_ij += u_hat[j|i] . v_j
        return v.transpose(0, 1).contiguous(), c.permute(1, 2, 0).contiguous()


def _orthogonal_matrices(shape: torch.Size) -> torch.Tensor:
    """Random (semi-)orthogonal matrices over the last two dims: ``nn.init.orthogonal_`` applied to each
    matrix (QR of a Gaussian matrix, signs fixed by diag(R)), batched because there are n_out * n_in of them."""
    *batch, rows, cols = shape
    a = torch.randn(*batch, max(rows, cols), min(rows, cols))
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    return q if rows >= cols else q.transpose(-2, -1)
