"""A click-conditioned refinement network: one click turns an organ's mask into a better one around it.

The network sees a square window of the slice centred on the newest click (:data:`WINDOW` pixels at the
scan's own resolution) and five channels there (:func:`encode`): the slice as the model's input stretch
sees it, the segmentation model's probability for the organ, the organ's current mask, discs at the
positive clicks so far and discs at the negative ones. The other organs are not an input: a refiner
trained with them took another organ's pixels for "not this organ", and segmentation models often call
one organ another (``docs/correct.md``). It answers the organ's mask in that window; outside the window the mask is kept.
It is a small U-Net (:class:`ClickRefiner`), trained by ``python -m train.clicks`` on simulated
reviewers' clicks (``train/clicks.py``) and used by :func:`model.interactive.click` when one is given.
Its weights travel as ``click_refiner.safetensors`` with ``click_refiner.json`` (the architecture) in one
folder; :func:`load` reads them. The app ships one in ``model/weights/click_refiner`` and uses it unless told
``--click-refiner none`` (``model.serving.SHIPPED_CLICK_REFINER``; measured in ``docs/correct.md``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

#: The window's side, in pixels of the scan (1.5 mm on the UW-Madison scans: 144 mm).
WINDOW = 96
#: The radius of the disc drawn at each click.
CLICK_DISC_PX = 3
MASK = 2  # the current mask's channel
WEIGHTS, CONFIG = "click_refiner.safetensors", "click_refiner.json"
CHANNELS = ("slice", "probability", "mask", "positive_clicks", "negative_clicks")


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(4, cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.GroupNorm(4, cout), nn.ReLU(inplace=True))


class ClickRefiner(nn.Module):
    """A U-Net from :data:`CHANNELS` to the organ's logit, with a skip that adds the current mask's own logit,
    so an untrained or unsure network keeps the mask it was given."""

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128)):
        super().__init__()
        self.widths = tuple(int(w) for w in widths)
        self.down = nn.ModuleList()
        cin = len(CHANNELS)
        for w in self.widths:
            self.down.append(_block(cin, w))
            cin = w
        self.up = nn.ModuleList(nn.ConvTranspose2d(w, w // 2, 2, stride=2) for w in self.widths[:0:-1])
        self.merge = nn.ModuleList(_block(w, w // 2) for w in self.widths[:0:-1])
        self.head = nn.Conv2d(self.widths[0], 1, 1)
        self.mask_gain = nn.Parameter(torch.tensor(4.0))
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        """A digest of the weights as they were when first asked (a served refiner's do not change): click
        results cached for one refiner are never served for another."""
        if self._fingerprint is None:
            digest = hashlib.blake2b(digest_size=16)
            for name, tensor in self.state_dict().items():
                digest.update(name.encode() + tensor.detach().cpu().numpy().tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for i, block in enumerate(self.down):
            h = block(h if i == 0 else nn.functional.max_pool2d(h, 2))
            skips.append(h)
        for up, merge, skip in zip(self.up, self.merge, skips[-2::-1]):
            h = merge(torch.cat([up(h), skip], dim=1))
        return self.head(h)[:, 0] + self.mask_gain * (2 * x[:, MASK] - 1)


def cut(a: np.ndarray, top: int, left: int) -> np.ndarray:
    """``a``'s window at ``(top, left)``, zero outside the slice."""
    out = np.zeros((WINDOW, WINDOW), dtype=a.dtype)
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + WINDOW, a.shape[0]), min(left + WINDOW, a.shape[1])
    if r1 > r0 and c1 > c0:
        out[r0 - top:r1 - top, c0 - left:c1 - left] = a[r0:r1, c0:c1]
    return out


def encode(stretched: np.ndarray, probability: np.ndarray | None, mask: np.ndarray,
           clicks: Sequence[tuple[int, int, bool]]) -> tuple[np.ndarray, tuple[int, int]]:
    """The network's input ``(5, WINDOW, WINDOW) float32`` around the newest of ``clicks``, and the window's origin.

    ``stretched``: the slice through :func:`model.image.normalize_intensity`, 0..255; ``probability`` the
    organ's ``(H, W)`` in 0..1 or ``None`` (zeros); ``mask`` ``(H, W) bool``; ``clicks`` ``(row, col, positive)``, oldest first (the newest sits at the window's centre).
    """
    row, col, _ = clicks[-1]
    top, left = row - WINDOW // 2, col - WINDOW // 2  # it may reach past the slice: zeros there
    x = np.zeros((len(CHANNELS), WINDOW, WINDOW), dtype=np.float32)
    x[0] = cut(np.asarray(stretched, dtype=np.float32) / 255.0, top, left)
    if probability is not None:
        x[1] = cut(np.asarray(probability, dtype=np.float32), top, left)
    x[MASK] = cut(mask, top, left)
    rr, cc = np.ogrid[:WINDOW, :WINDOW]
    for r, c, positive in clicks:
        x[3 if positive else 4][(rr - (r - top)) ** 2 + (cc - (c - left)) ** 2 <= CLICK_DISC_PX ** 2] = 1.0
    return x, (top, left)


def paste(mask: np.ndarray, window: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
    """``mask`` with ``window`` ``(WINDOW, WINDOW) bool`` written back at ``origin`` (the part inside the slice)."""
    top, left = origin
    out = mask.copy()
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + WINDOW, mask.shape[0]), min(left + WINDOW, mask.shape[1])
    if r1 > r0 and c1 > c0:
        out[r0:r1, c0:c1] = window[r0 - top:r1 - top, c0 - left:c1 - left]
    return out


@torch.no_grad()
def refine(net: ClickRefiner, stretched: np.ndarray, probability: np.ndarray | None, mask: np.ndarray,
           clicks: Sequence[tuple[int, int, bool]]) -> np.ndarray:
    """The organ's mask after the newest of ``clicks`` (the earlier ones are in ``mask`` already and steer it).

    Always float32 on the CPU, whatever autocast a caller has on: a bf16 path would make the mask depend on
    the CPU (native bf16 or not), and the click answers in milliseconds without it."""
    x, origin = encode(stretched, probability, mask, clicks)
    with torch.autocast("cpu", enabled=False):
        logit = net(torch.from_numpy(x)[None])[0].numpy()
    return paste(mask, logit > 0, origin)


def save(net: ClickRefiner, folder: Path) -> Path:
    """Write the network's weights and architecture into ``folder`` (beside a checkpoint)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, folder / WEIGHTS)
    (folder / CONFIG).write_text(json.dumps({"widths": list(net.widths), "window": WINDOW,
                                             "click_disc_px": CLICK_DISC_PX, "channels": list(CHANNELS)}, indent=1) + "\n")
    return folder


def available(folder: Path | None) -> bool:
    """Whether ``folder`` holds a click refiner."""
    return folder is not None and (Path(folder) / WEIGHTS).is_file() and (Path(folder) / CONFIG).is_file()


def load(folder: Path) -> ClickRefiner:
    """The click refiner saved in ``folder`` by :func:`save`, in eval mode and called once (warm). Raises
    ``ValueError`` for one built for another window, click disc or channel list (its inputs would mean
    something else)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config = json.loads((folder / CONFIG).read_text())
    expected = {"window": WINDOW, "click_disc_px": CLICK_DISC_PX, "channels": list(CHANNELS)}
    for key, value in expected.items():
        if config.get(key) != value:
            raise ValueError(f"{folder / CONFIG}: {key} is {config.get(key)!r}, this code reads {value!r}")
    net = ClickRefiner(config["widths"])
    net.load_state_dict(load_file(folder / WEIGHTS))
    net.eval()
    # The process's first call sets up its kernels (190.8 ms in benchmarks/results/reviewer/more_steps.json,
    # against about 20 ms a click after it): one call on a blank window here, at load (the app loads at start),
    # not on a person's first click (rerun/more_steps_warm.json: 28.9 ms).
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        net(torch.zeros(1, len(CHANNELS), WINDOW, WINDOW))
    return net
