"""The end-to-end demo: train a tissue segmenter on half a brain, segment the other half.

Data: the MNI ICBM152 2009a T1 template and its grey- and white-matter
probability maps, shipped inside the ``nilearn`` package (197×233×189, 1 mm),
so nothing is downloaded. Stages:

1. **prepare**: build a tissue label map (0 background, 1 CSF/other brain,
   2 grey matter, 3 white matter) from the probability maps; write the T1 and
   the labels as ``.nii.zarr``. The training labels hide the right hemisphere
   (value 255, ignored by the loss and never a patch centre).
2. **train**: a small 3-D U-Net on patches from a :class:`~voxelflow.Queue`
   with a class-balanced :class:`~voxelflow.LabelSampler` and flip + noise
   augmentation, centres only in the left hemisphere, for a fixed step budget.
3. **infer**: segment the whole volume with :class:`~voxelflow.GridSampler`
   and a Hann :class:`~voxelflow.PatchAggregator`; Dice per tissue on the right
   hemisphere (never trained on) beside an intensity-threshold baseline fitted
   on the left hemisphere.
4. **write**: the segmentation as ``.nii.gz`` and ``.nii.zarr``, and a PNG of
   three orthogonal slices (image, truth, prediction).
"""

from __future__ import annotations

import importlib.resources
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from voxelflow._errors import VoxelflowFileNotFoundError, require
from voxelflow._resources import Stage

TISSUES = {1: "CSF/other", 2: "grey matter", 3: "white matter"}
IGNORE = 255
_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


@dataclass
class DemoConfig:
    """Options of ``voxelflow demo`` (see ``voxelflow demo --help``)."""

    out_dir: Path = Path("voxelflow-demo")
    steps: int = 300
    patch_size: int = 32
    batch_size: int = 8
    inference_patch_size: int = 64
    patch_overlap: int = 16
    device: str = "cpu"
    seed: int = 0
    workers: int = 1
    learning_rate: float = 3e-3
    threads: int | None = None


@dataclass
class DemoResult:
    """What the demo measured; written to ``summary.json`` in the output folder."""

    dice: dict[str, float] = field(default_factory=dict)
    dice_baseline: dict[str, float] = field(default_factory=dict)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    final_loss: float = float("nan")
    files: list[str] = field(default_factory=list)


def template_paths() -> dict[str, Path]:
    """Paths of the MNI ICBM152 files inside the installed ``nilearn`` package."""
    require("nilearn", "The demo (MNI ICBM152 template)", "nilearn")
    data = importlib.resources.files("nilearn.datasets") / "data"
    paths = {key: Path(str(data / name)) for key, name in _FILES.items()}
    for path in paths.values():
        if not path.exists():
            raise VoxelflowFileNotFoundError(
                f"{path}: not found in the installed nilearn; reinstall it: pip install -U nilearn"
            )
    return paths


# ------------------------------------------------------------------ the network
class TinyUNet(nn.Module):
    """A two-level 3-D U-Net (about 100 k parameters): small enough for two CPU cores.

    Fully convolutional with batch norm (running statistics at inference), so it
    can segment patches larger than those it was trained on.

    Example:
        >>> import torch
        >>> from voxelflow.demo import TinyUNet
        >>> TinyUNet(1, 4)(torch.zeros(2, 1, 16, 16, 16)).shape
        torch.Size([2, 4, 16, 16, 16])
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv3d(cin, cout, 3, padding=1),
                nn.BatchNorm3d(cout),
                nn.LeakyReLU(0.1, inplace=True),
                nn.Conv3d(cout, cout, 3, padding=1),
                nn.BatchNorm3d(cout),
                nn.LeakyReLU(0.1, inplace=True),
            )

        self.down = block(in_channels, width)
        self.pool = nn.MaxPool3d(2)
        self.bottom = block(width, 2 * width)
        self.up = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)
        self.merge = block(3 * width, width)
        self.head = nn.Conv3d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.down(x)
        deep = self.up(self.bottom(self.pool(skip)))
        return self.head(self.merge(torch.cat([skip, deep], dim=1)))


# ------------------------------------------------------------------ metrics
def dice_scores(prediction: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Dice per tissue inside ``mask``."""
    scores = {}
    for label, name in TISSUES.items():
        p = (prediction == label) & mask
        t = (truth == label) & mask
        denominator = p.sum() + t.sum()
        scores[name] = float(2 * (p & t).sum() / denominator) if denominator else float("nan")
    return scores


def threshold_baseline(t1: np.ndarray, labels: np.ndarray, fit_mask: np.ndarray) -> np.ndarray:
    """Intensity thresholds at the midpoints between class means fitted on ``fit_mask``."""
    means = {label: float(t1[(labels == label) & fit_mask].mean()) for label in TISSUES}
    order = sorted(means, key=means.get)  # type: ignore[arg-type]
    cuts = [(means[a] + means[b]) / 2 for a, b in zip(order, order[1:], strict=False)]
    prediction = np.zeros(t1.shape, np.uint8)
    brain = labels > 0
    classes = np.digitize(t1, cuts)
    prediction[brain] = np.asarray(order, np.uint8)[classes[brain]]
    return prediction


# ------------------------------------------------------------------ stages
def prepare(config: DemoConfig) -> dict[str, Any]:
    """Stage 1: labels from the probability maps; T1 and labels written as ``.nii.zarr``."""
    import voxelflow as tio

    paths = template_paths()
    t1_image = tio.ScalarImage(paths["t1"])
    t1 = t1_image.data[0].numpy().astype(np.float32)
    gm = tio.ScalarImage(paths["gm"]).data[0].numpy() / 255.0
    wm = tio.ScalarImage(paths["wm"]).data[0].numpy() / 255.0
    brain = t1 > 0
    labels = np.zeros(t1.shape, np.uint8)
    labels[brain] = 1
    labels[brain & (gm >= 0.5) & (gm >= wm)] = 2
    labels[brain & (wm >= 0.5) & (wm > gm)] = 3
    # Background stays 0 and the brightest tissue is near 1: no value is ambiguous.
    normalised = t1 / np.percentile(t1[brain], 99)
    affine = t1_image.affine
    world_x = affine[0, 0] * np.arange(t1.shape[0]) + affine[0, 3]
    left = np.broadcast_to((world_x < 0)[:, None, None], t1.shape)
    train_labels = labels.copy()
    train_labels[~left] = IGNORE

    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    tio.ScalarImage(torch.from_numpy(normalised)[None], affine=affine).save(out / "t1.nii.zarr")
    tio.LabelMap(torch.from_numpy(labels)[None], affine=affine).save(out / "tissues.nii.zarr")
    tio.LabelMap(torch.from_numpy(train_labels)[None], affine=affine).save(
        out / "train_labels.nii.zarr"
    )
    return {"t1": normalised, "labels": labels, "left": left, "affine": affine}


def train(config: DemoConfig) -> tuple[nn.Module, float]:
    """Stage 2: patches from a Queue over the lazily read ``.nii.zarr`` files."""
    from tqdm.auto import tqdm

    import voxelflow as tio
    from voxelflow.loader import SubjectsLoader

    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    subject = tio.Subject(
        t1=tio.ScalarImage(config.out_dir / "t1.nii.zarr"),
        seg=tio.LabelMap(config.out_dir / "train_labels.nii.zarr"),
    )
    sampler = tio.LabelSampler(
        subject,
        patch_size=config.patch_size,
        label_name="seg",
        label_probabilities={0: 0.1, 1: 0.3, 2: 0.3, 3: 0.3},  # 255 (right hemisphere): never
    )
    transform = tio.Compose([tio.Flip(axes=(0,), p=0.5), tio.Noise(std=0.05)])
    patches_per_volume = config.batch_size * 25
    epochs = -(-config.steps // 25)
    queue = tio.Queue(
        [subject] * epochs,
        patch_sampler=sampler,
        max_length=4 * patches_per_volume,
        patches_per_volume=patches_per_volume,
        num_workers=config.workers,
        transform=transform,
        seed=config.seed,
    )
    loader = SubjectsLoader(queue, batch_size=config.batch_size, generator=generator)
    device = torch.device(config.device)
    model = TinyUNet(1, 4).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.learning_rate, total_steps=config.steps
    )
    criterion = nn.CrossEntropyLoss(ignore_index=IGNORE)
    model.train()
    losses: list[float] = []
    with tqdm(total=config.steps, desc="train", unit="step") as bar:
        for batch in loader:
            if bar.n >= config.steps:
                break
            inputs = batch.t1.data.to(device)
            targets = batch.seg.data[:, 0].long().to(device)
            loss = criterion(model(inputs), targets)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
            bar.update()
    return model, float(np.mean(losses[-20:]))


@torch.no_grad()
def infer(model: nn.Module, config: DemoConfig) -> Any:
    """Stage 3: grid patches through the model, blended by a Hann window."""
    from tqdm.auto import tqdm

    import voxelflow as tio
    from voxelflow.loader import SubjectsLoader

    subject = tio.Subject(t1=tio.ScalarImage(config.out_dir / "t1.nii.zarr"))
    sampler = tio.GridSampler(
        subject, patch_size=config.inference_patch_size, patch_overlap=config.patch_overlap
    )
    loader = SubjectsLoader(sampler, batch_size=2)
    aggregator = tio.PatchAggregator(
        spatial_shape=subject.spatial_shape, overlap_mode="hann", patch_overlap=config.patch_overlap
    )
    device = torch.device(config.device)
    model.eval()
    for batch in tqdm(loader, desc="infer", unit="batch"):
        probabilities = model(batch.t1.data.to(device)).softmax(dim=1)
        locations = batch.metadata["patch_location"]
        aggregator.add_batch(probabilities.cpu(), locations)
    return aggregator.get_output()


def write_outputs(
    segmentation: np.ndarray, prepared: dict[str, Any], config: DemoConfig
) -> list[Path]:
    """Stage 4: the segmentation as .nii.gz and .nii.zarr, and a PNG figure."""
    import voxelflow as tio

    out = config.out_dir
    image = tio.LabelMap(torch.from_numpy(segmentation)[None], affine=prepared["affine"])
    files = [out / "segmentation.nii.gz", out / "segmentation.nii.zarr", out / "segmentation.png"]
    image.save(files[0])
    image.save(files[1])
    save_figure(prepared["t1"], prepared["labels"], segmentation, files[2])
    return files


def save_figure(t1: np.ndarray, truth: np.ndarray, prediction: np.ndarray, path: Path) -> None:
    """Three orthogonal slices through the centre: image, truth, prediction."""
    matplotlib = require("matplotlib", "The demo's figure", "matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    colours = ListedColormap(["black", "#4a90d9", "#e8a33d", "#f4f1e8"])
    centre = [n // 2 for n in t1.shape]
    views = {
        "sagittal (right, held out)": lambda a: a[centre[0] + 30].T,
        "coronal": lambda a: a[:, centre[1]].T,
        "axial": lambda a: a[:, :, centre[2]].T,
    }
    figure, axes = plt.subplots(3, 3, figsize=(10, 10), facecolor="black")
    for row, (view, cut) in enumerate(views.items()):
        panels = [
            (cut(t1), "gray", "T1 (MNI ICBM152)"),
            (cut(truth), colours, "truth"),
            (cut(prediction), colours, "prediction"),
        ]
        for col, (array, cmap, title) in enumerate(panels):
            axis = axes[row, col]
            axis.imshow(
                array,
                cmap=cmap,
                origin="lower",
                interpolation="nearest",
                vmin=None if cmap == "gray" else 0,
                vmax=None if cmap == "gray" else 3,
            )
            axis.set_axis_off()
            axis.set_title(f"{title}, {view}", color="white", fontsize=10)
    figure.suptitle(
        "voxelflow demo: trained on the left hemisphere only (image left = subject left)",
        color="white",
    )
    figure.tight_layout()
    figure.savefig(path, dpi=90, facecolor="black")
    plt.close(figure)


def run_demo(config: DemoConfig) -> DemoResult:
    """Run the four stages; print progress; return what was measured."""
    if config.threads:
        torch.set_num_threads(config.threads)
    result = DemoResult()
    start = time.perf_counter()
    with Stage("prepare") as stage:
        prepared = prepare(config)
    result.stages["prepare"] = _figures(stage)
    with Stage("train") as stage:
        model, result.final_loss = train(config)
    result.stages["train"] = _figures(stage)
    with Stage("infer") as stage:
        probabilities = infer(model, config)
        segmentation = probabilities.argmax(dim=0).to(torch.uint8).cpu().numpy()
    result.stages["infer"] = _figures(stage)
    right = ~prepared["left"]
    result.dice = dice_scores(segmentation, prepared["labels"], right)
    baseline = threshold_baseline(prepared["t1"], prepared["labels"], prepared["left"])
    result.dice_baseline = dice_scores(baseline, prepared["labels"], right)
    with Stage("write") as stage:
        files = write_outputs(segmentation, prepared, config)
    result.stages["write"] = _figures(stage)
    result.stages["total"] = {
        "seconds": time.perf_counter() - start,
        "peak_rss_mib": max(s["peak_rss_mib"] for s in result.stages.values()),
    }
    result.files = [str(f) for f in files]
    (config.out_dir / "summary.json").write_text(
        json.dumps(
            {"config": {k: str(v) for k, v in asdict(config).items()}, **asdict(result)}, indent=2
        )
    )
    return result


def _figures(stage: Stage) -> dict[str, float]:
    return {"seconds": round(stage.seconds, 2), "peak_rss_mib": round(stage.peak_rss / 2**20, 1)}


def format_summary(result: DemoResult) -> str:
    """The table printed at the end of the demo."""
    lines = ["", "Dice on the right hemisphere (never trained on):", ""]
    lines.append(f"  {'tissue':<14}{'voxelflow model':>16}{'threshold baseline':>20}")
    for name in TISSUES.values():
        lines.append(f"  {name:<14}{result.dice[name]:>16.3f}{result.dice_baseline[name]:>20.3f}")
    lines += ["", f"  {'stage':<14}{'time (s)':>16}{'peak RSS (MiB)':>20}"]
    for name, figures in result.stages.items():
        lines.append(f"  {name:<14}{figures['seconds']:>16.1f}{figures['peak_rss_mib']:>20.0f}")
    lines += ["", "Files:"] + [f"  {f}" for f in result.files]
    return "\n".join(lines)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
