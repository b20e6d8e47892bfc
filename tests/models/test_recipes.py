"""`--recipe cpu | paper`: the tables, the user's values winning, the data-set adaptations, LARS,
and the paper recipe's formulas against the official code restated (in our words)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import faiss
import pytest
import torch
from torch import nn

from models.config import TrainConfig
from models.lars import LARS
from models.recipes import PAPER, fit_to_data
from models.train import Trainer
from protoscope.cli import main as cli_main


def _get(cfg: TrainConfig, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


# --- the tables ---------------------------------------------------------------------------------
def test_cpu_is_the_default_and_unchanged_by_the_paper_table() -> None:
    assert TrainConfig().recipe == "cpu"
    swav, pcl = TrainConfig(method="swav"), TrainConfig(method="pcl")
    assert (swav.swav.epsilon, swav.augment.num_small, swav.optim.name) == (0.02, 2, "adamw")
    assert (pcl.pcl.positives, pcl.pcl.kmeans_redo, pcl.optim.final_lr_frac) == ("cluster", 1, 1.0)


@pytest.mark.parametrize("method", ["swav", "pcl"])
def test_paper_fills_every_field_of_its_table_and_the_user_still_wins(method: str) -> None:
    cfg = TrainConfig(method=method, recipe="paper")
    for dotted, value in PAPER[method].items():
        got = _get(cfg, dotted)
        assert got == (tuple(value) if isinstance(value, list) else value), dotted
    # A value the user sets is kept, and the rest of the recipe still applies.
    mine = TrainConfig.model_validate(
        {"method": method, "recipe": "paper", "optim": {"lr": 0.123}, "augment": {"blur_p": 0.0}}
    )
    assert mine.optim.lr == 0.123 and mine.augment.blur_p == 0.0
    assert mine.optim.name == cfg.optim.name and mine.augment.blur_sigma == (0.1, 2.0)
    # The stored config (config.json) reads back as the same run, recipe recorded.
    again = TrainConfig.model_validate_json(cfg.model_dump_json())
    assert again == cfg and json.loads(cfg.model_dump_json())["recipe"] == "paper"


def test_paper_values_from_the_official_commands() -> None:
    """The numbers of facebookresearch/swav's batch-256 command and salesforce/PCL's v2 one."""
    s = TrainConfig(method="swav", recipe="paper", batch_size=64)
    assert (s.augment.num_large, s.augment.num_small) == (2, 6)
    assert s.augment.large_scale == (0.14, 1.0) and s.augment.small_scale == (0.05, 0.14)
    assert round(s.augment.small_frac * 224) == 96
    assert (s.swav.epsilon, s.swav.temperature, s.swav.sinkhorn_iterations) == (0.05, 0.1, 3)
    assert (s.swav.queue_length, s.swav.epoch_queue_starts) == (3840, 15)
    assert s.swav.freeze_prototypes_epochs == 1
    assert (s.optim.name, s.optim.lr, s.optim.weight_decay) == ("lars", 0.6, 1e-6)
    assert s.optim.lr * s.optim.final_lr_frac == pytest.approx(0.0006)
    p = TrainConfig(method="pcl", recipe="paper", batch_size=256, epochs=200)
    assert (p.optim.name, p.optim.lr, p.optim.weight_decay) == ("sgd", 0.03, 1e-4)
    assert (p.pcl.momentum, p.pcl.queue_length, p.pcl.temperature) == (0.999, 16384, 0.2)
    assert (p.pcl.positives, p.pcl.kmeans_redo, p.pcl.kmeans_iters) == ("sample", 5, 20)
    assert p.pcl.warmup_epochs == 20  # 20 of 200 epochs with InfoNCE only
    assert p.pcl.bn_splits == 8  # shuffle-BN stand-in: BatchNorm over 32 images, as per GPU
    # Smaller batches scale MoCo's learning rate linearly and keep BatchNorm groups of 32.
    small = TrainConfig(method="pcl", recipe="paper", batch_size=64, epochs=30)
    assert small.optim.lr == pytest.approx(0.0075) and small.pcl.bn_splits == 2
    assert small.pcl.warmup_epochs == 3


def test_fit_to_data_caps_queues_below_the_training_set_and_says_so() -> None:
    cfg = TrainConfig(method="pcl", recipe="paper", batch_size=32)
    fitted, notes = fit_to_data(cfg, num_train=1000, image_size=28)
    assert fitted.pcl.queue_length == 960 and fitted.pcl.queue_length % 32 == 0
    assert any("MoCo queue 960 instead of 16384" in n for n in notes)
    assert any("28 px" in n for n in notes)
    swav, notes = fit_to_data(TrainConfig(method="swav", recipe="paper"), 10_000, 28)
    assert swav.swav.queue_length == 3840  # fits: unchanged
    assert any("crops of 28 and 12 px" in n for n in notes)
    # The cpu recipe is never adapted.
    cpu = TrainConfig(method="pcl")
    assert fit_to_data(cpu, 100, 28) == (cpu, [])


# --- LARS against apex's LARC, restated --------------------------------------------------------
def larc_reference_step(params: list[torch.Tensor], sgd: torch.optim.SGD, wd: float) -> None:
    """LARC (trust 10⁻³, clip off) as SwAV uses it: rescale each gradient, then plain SGD."""
    with torch.no_grad():
        for p in params:
            w, g = p.norm(), p.grad.norm()
            if w != 0 and g != 0:
                rate = 1e-3 * w / (g + w * wd + 1e-8)
                p.grad.add_(p, alpha=wd).mul_(rate)
    sgd.step()


def test_lars_takes_the_steps_of_larc() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))
    twin = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))
    twin.load_state_dict(net.state_dict())
    with torch.no_grad():
        net[3].bias.zero_()  # a zero tensor: LARC leaves its gradient as it is
        twin[3].bias.zero_()
    before = [p.detach().clone() for p in net.parameters()]
    ours = LARS(net.parameters(), lr=0.6, momentum=0.9, weight_decay=1e-6)
    ref_params = list(twin.parameters())
    ref = torch.optim.SGD(ref_params, lr=0.6, momentum=0.9, weight_decay=0.0)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    for _ in range(5):
        for model, opt in ((net, ours), (twin, ref)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
        ours.step()
        larc_reference_step(ref_params, ref, wd=1e-6)
    for a, b in zip(net.parameters(), twin.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(net[0].weight, before[0])  # it did move
    assert torch.equal(net[3].bias != 0, twin[3].bias != 0)


# --- paper runs, end to end ----------------------------------------------------------------------
def _tiny_paper(method: str, **over: Any) -> TrainConfig:
    tree: dict[str, Any] = {
        "method": method,
        "recipe": "paper",
        "width": 4,
        "batch_size": 32,
        "epochs": 2,
        "max_steps": 10,
        "amp": "off",
        "eval_max_images": 64,
        "knn_every_steps": None,
        "data": {"name": "shapes", "num_train": 256, "image_size": 16},
        "swav": {"num_prototypes": 20, "hidden_dim": 32, "feat_dim": 16},
        "pcl": {"num_clusters": [8, 12]},
    }
    tree.update(over)
    return TrainConfig.model_validate(tree)


def test_a_paper_swav_run_trains_with_lars_and_says_what_it_adapted(tmp_path: Path) -> None:
    end = Trainer(_tiny_paper("swav"), tmp_path, progress=False).run()
    assert end["status"] == "completed"
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    start = events[0]
    assert start["recipe"] == "paper"
    assert start["crop_sizes"] == [16, 16] + [8] * 6  # 96/224 of 16 px is 7: 8 is the floor
    assert any("SwAV queue 224 instead of 3840" in n for n in start["recipe_notes"])
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["recipe"] == "paper" and saved["swav"]["queue_length"] == 224
    assert saved["optim"]["name"] == "lars"
    steps = [e for e in events if e["type"] == "step"]
    assert len(steps) == 10 and all(e["loss"] == e["loss"] for e in steps)  # finite


def test_a_paper_pcl_run_uses_per_sample_positives_and_five_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    real = faiss.Clustering

    class Spy(real):  # type: ignore[misc, valid-type]
        def train(self, *args: Any, **kwargs: Any) -> Any:
            seen.append(int(self.nredo))
            return super().train(*args, **kwargs)

    monkeypatch.setattr(faiss, "Clustering", Spy)
    cfg = _tiny_paper("pcl", epochs=20, max_steps=24)  # 8 steps an epoch, warm-up 2 epochs
    assert cfg.pcl.warmup_epochs == 2
    Trainer(cfg, tmp_path, progress=False).run()
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["pcl"]["positives"] == "sample" and saved["pcl"]["queue_length"] == 224
    assert seen and set(seen) == {5}  # every k-means of the E-step restarted 5 times
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    proto = [e for e in events if e["type"] == "step" and "loss_protonce" in e]
    assert proto and proto[0]["epoch"] == 2  # ProtoNCE only after the InfoNCE warm-up


def test_cli_recipe_flag(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", "--recipe", "paper", "--method", "pcl", "--num-train", "128"]
    args += ["--image-size", "16", "--width", "4", "--batch-size", "32", "--max-steps", "2"]
    args += ["--num-clusters", "4,8", "--out", str(out), "--quiet", "--no-amp"]
    assert cli_main(args) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["recipe"] == "paper" and saved["pcl"]["positives"] == "sample"
