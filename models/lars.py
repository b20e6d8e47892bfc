"""LARS as SwAV trains with it: SGD with momentum, each tensor's step scaled by a trust ratio.

The official code wraps SGD in apex's LARC (trust coefficient 10⁻³, no clipping): for a tensor
w with gradient g and weight decay λ, the gradient becomes

    (g + λ w) · η ‖w‖ / (‖g‖ + λ ‖w‖ + 10⁻⁸)    when ‖w‖ > 0 and ‖g‖ > 0, else g unchanged,

and plain SGD with momentum (no further decay) takes the step. torch has no LARS, and apex is a
CUDA build; lightly's LARS differs (it skips 1-d tensors and clips differently), so this one is
written by hand to match LARC exactly (tests/models/test_recipes.py checks it against a
restatement).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor


class LARS(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 1e-3,
        eps: float = 1e-8,
    ) -> None:
        if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0 or trust_coefficient <= 0:
            raise ValueError("LARS needs lr > 0, 0 <= momentum < 1, weight_decay >= 0, trust > 0")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "trust_coefficient": trust_coefficient,
            "eps": eps,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            wd, mom = group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                if w_norm > 0 and g_norm > 0:
                    ratio = (
                        group["trust_coefficient"] * w_norm / (g_norm + w_norm * wd + group["eps"])
                    )
                    g = (g + wd * p) * ratio
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = g.clone()
                else:
                    buf.mul_(mom).add_(g)
                p.add_(buf, alpha=-group["lr"])
        return loss
