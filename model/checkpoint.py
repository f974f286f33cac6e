"""Checkpoints: resolve → verify → convert → load.

**The contract.** A checkpoint is a directory (local, or a Hub model repo) holding

- ``config.json``: a ``SegformerConfig`` whose ``id2label`` names the organs of
  :mod:`model.labels` (plus ``background`` at id 0 for softmax heads).
  ``problem_type == "multi_label_classification"`` means one sigmoid per organ
  (overlaps possible); anything else means softmax over the classes.
  An optional ``slice_offsets`` list (e.g. ``[-2, 0, 2]``) declares a 2.5D input whose
  channels are neighbouring slices; without it every channel is the same slice.
- ``model.safetensors``.
- ``preprocessor_config.json`` with the ``SegformerImageProcessor`` fields ``size``,
  ``resample``, ``image_mean``, ``image_std`` (and ``rescale_factor``).

Before those fields apply, every slice goes through :func:`model.image.normalize_intensity`
(per-image min–max to 0..255) and, for single-slice models, is replicated to 3 channels.
Serving resizes bilinearly with antialiasing (PIL semantics, as the blog's app served);
the blog's notebook trained with nearest-neighbour resizing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import labels

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
PREPROCESSOR = "preprocessor_config.json"
CONTRACT_FILES = (CONFIG, WEIGHTS, PREPROCESSOR)

#: The blog's fine-tuned SegFormer-B4 lives inside this HuggingFace *Space*, not a model repo.
DEFAULT_SPACE = "veb-101/UWMGI_Medical_Image_Segmentation"
DEFAULT_SUBFOLDER = "segformer_trained_weights"
DEFAULT_WEIGHTS = "pytorch_model.bin"
DEFAULT_SHA256 = "9d4e3ff92a26341874655b112c2dc458cbb5ecf6d03f078dea8dd92ab0639e4a"
#: The blog's app resized to 288² (the config's ``image_size: 224`` is a leftover) and used ImageNet statistics.
DEFAULT_INPUT_SIZE = 288
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The value the app shows and ``--model`` accepts for the blog's checkpoint.
DEFAULT_MODEL = "default"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be found, verified or loaded. ``str(err)`` is a short, actionable message."""


@dataclass(frozen=True)
class Contract:
    """What a contract checkpoint says about its input and output."""

    multi_label: bool
    #: For each organ in :data:`model.labels.ORGANS`, its output channel.
    organ_channels: tuple[int, ...]
    input_size: tuple[int, int]  # (height, width)
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    rescale_factor: float = 1 / 255
    slice_offsets: tuple[int, ...] | None = None
    num_channels: int = 3


@dataclass(frozen=True)
class CheckpointInfo:
    """Where a loaded checkpoint came from, for the About section."""

    source: str  # repo id or local path
    revision: str | None
    weights_sha256: str
    local_dir: Path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str) -> None:
    """Raise :class:`CheckpointError` unless ``path`` has the ``expected`` sha256 (hex)."""
    actual = sha256_file(path)
    if actual.lower() != expected.lower():
        raise CheckpointError(
            f"{Path(path).name} has sha256 {actual}, expected {expected}; refusing to load it."
        )


# --------------------------------------------------------------------------- contract files


def preprocessor_dict(size: int | tuple[int, int], mean=IMAGENET_MEAN, std=IMAGENET_STD) -> dict:
    """The ``preprocessor_config.json`` content, in ``SegformerImageProcessor``'s own field names."""
    h, w = (size, size) if isinstance(size, int) else size
    return {
        "image_processor_type": "SegformerImageProcessor",
        "do_resize": True,
        "size": {"height": int(h), "width": int(w)},
        "resample": 2,  # PIL.Image.BILINEAR
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(mean),
        "image_std": list(std),
        "do_reduce_labels": False,
    }


def save_contract(model, dst: str | Path, *, size: int | tuple[int, int], mean=IMAGENET_MEAN, std=IMAGENET_STD,
                  slice_offsets: list[int] | None = None) -> Path:
    """Write ``model`` (a ``SegformerForSemanticSegmentation``) as a contract checkpoint in ``dst``.

    Sets ``id2label`` from :mod:`model.labels` according to the head (``num_labels == 3`` and
    ``problem_type == "multi_label_classification"`` → sigmoid; 4 labels → softmax).
    """
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    config = model.config
    multi_label = config.problem_type == "multi_label_classification"
    expected = len(labels.ORGANS) + (0 if multi_label else 1)
    if config.num_labels != expected:
        raise CheckpointError(f"A {'multi-label' if multi_label else 'softmax'} head needs {expected} labels, "
                              f"this model has {config.num_labels}.")
    config.id2label = labels.id2label(multi_label)
    config.label2id = labels.label2id(config.id2label)
    if slice_offsets is not None:
        config.slice_offsets = [int(o) for o in slice_offsets]
        if config.num_channels != len(config.slice_offsets):
            raise CheckpointError("slice_offsets must have one entry per input channel.")
    model.save_pretrained(dst, safe_serialization=True)
    (dst / PREPROCESSOR).write_text(json.dumps(preprocessor_dict(size, mean, std), indent=2) + "\n")
    return dst


def read_contract(local_dir: str | Path) -> Contract:
    """Read and check ``config.json`` and ``preprocessor_config.json`` of a contract checkpoint."""
    local_dir = Path(local_dir)
    missing = [name for name in CONTRACT_FILES if not (local_dir / name).is_file()]
    if missing:
        raise CheckpointError(
            f"{local_dir} is not a checkpoint directory: missing {', '.join(missing)}. "
            "Convert the blog's weights with `python -m model.convert SRC DST`."
        )
    try:
        config = json.loads((local_dir / CONFIG).read_text())
        prep = json.loads((local_dir / PREPROCESSOR).read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{local_dir}: invalid JSON ({err}).") from None
    multi_label = config.get("problem_type") == "multi_label_classification"
    id2label = {int(k): v for k, v in (config.get("id2label") or {}).items()}
    label2id = labels.label2id(id2label)
    unknown = sorted(set(label2id) - set(labels.ORGANS) - {labels.BACKGROUND})
    if unknown or any(o not in label2id for o in labels.ORGANS):
        raise CheckpointError(
            f"{local_dir}/config.json id2label {sorted(label2id)} does not name the organs "
            f"{list(labels.ORGANS)}; generic LABEL_n names need `python -m model.convert`."
        )
    if not multi_label and label2id.get(labels.BACKGROUND) != 0:
        raise CheckpointError(f"{local_dir}/config.json: a softmax head needs 'background' at id 0.")
    size = prep.get("size") or {}
    if "height" in size and "width" in size:
        input_size = (int(size["height"]), int(size["width"]))
    elif "shortest_edge" in size:
        input_size = (int(size["shortest_edge"]),) * 2
    else:
        raise CheckpointError(f"{local_dir}/preprocessor_config.json has no size.")
    offsets = config.get("slice_offsets")
    num_channels = int(config.get("num_channels", 3))
    if offsets is not None and len(offsets) != num_channels:
        raise CheckpointError(f"{local_dir}/config.json: slice_offsets needs one entry per input channel.")
    return Contract(
        multi_label=multi_label,
        organ_channels=tuple(label2id[o] for o in labels.ORGANS),
        input_size=input_size,
        image_mean=tuple(float(v) for v in prep.get("image_mean", IMAGENET_MEAN)),
        image_std=tuple(float(v) for v in prep.get("image_std", IMAGENET_STD)),
        rescale_factor=float(prep.get("rescale_factor", 1 / 255)) if prep.get("do_rescale", True) else 1.0,
        slice_offsets=tuple(int(o) for o in offsets) if offsets is not None else None,
        num_channels=num_channels,
    )


# --------------------------------------------------------------------------- conversion


def convert_original(src: str | Path, dst: str | Path, sha256: str | None = None) -> Path:
    """Turn a folder in the Space's original layout into a contract checkpoint.

    ``src`` holds ``config.json`` (generic ``LABEL_0..3``) and ``pytorch_model.bin`` (a pickled
    state dict). With ``sha256`` the pickle is verified *before* it is unpickled, and it is only
    ever unpickled with ``weights_only=True``. The head is a 4-class softmax whose ids follow the
    training notebook (see :mod:`model.labels`).
    """
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    src, dst = Path(src), Path(dst)
    weights = src / DEFAULT_WEIGHTS
    if not (src / CONFIG).is_file() or not weights.is_file():
        raise CheckpointError(f"{src} needs {CONFIG} and {DEFAULT_WEIGHTS} (the Space's original layout).")
    if sha256:
        verify_sha256(weights, sha256)
    config = SegformerConfig.from_json_file(src / CONFIG)
    if config.num_labels != len(labels.ORGANS) + 1:
        raise CheckpointError(f"{src}: expected a 4-class head (background + 3 organs), got {config.num_labels}.")
    config.problem_type = "single_label_classification"
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise CheckpointError(f"{weights} is not a loadable state dict ({type(err).__name__}: {err}).") from None
    model = SegformerForSemanticSegmentation(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{weights} does not match the config: missing {list(missing)[:3]}, "
                              f"unexpected {list(unexpected)[:3]}.")
    with tempfile.TemporaryDirectory(dir=dst.parent if dst.parent.exists() else None) as tmp:
        save_contract(model, tmp, size=DEFAULT_INPUT_SIZE)
        if dst.exists():
            shutil.rmtree(dst)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(tmp, dst)
    return dst


# --------------------------------------------------------------------------- resolution


def _converted_default_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / f"converted--{DEFAULT_SPACE.replace('/', '--')}--{DEFAULT_SHA256[:16]}"


def download_default(revision: str | None = None) -> Path:
    """Download the blog's original weights from the Space; returns the folder holding them."""
    from huggingface_hub import hf_hub_download

    kwargs = dict(repo_id=DEFAULT_SPACE, repo_type="space", subfolder=DEFAULT_SUBFOLDER, revision=revision)
    config_path = hf_hub_download(filename=CONFIG, **kwargs)
    weights_path = hf_hub_download(filename=DEFAULT_WEIGHTS, **kwargs)
    folder = Path(config_path).parent
    if Path(weights_path).parent != folder:  # pragma: no cover - hub cache keeps one snapshot folder
        raise CheckpointError("Downloaded files landed in different snapshot folders.")
    return folder


def resolve_default(revision: str | None = None) -> tuple[Path, CheckpointInfo]:
    """The blog's checkpoint as a contract directory: converted once into the HF cache, then reused offline."""
    converted = _converted_default_dir()
    if not all((converted / name).is_file() for name in CONTRACT_FILES):
        try:
            original = download_default(revision)
        except Exception as err:  # noqa: BLE001 - network, auth and cache misses all mean "not available"
            raise CheckpointError(
                f"Could not get the default checkpoint from the Space {DEFAULT_SPACE} "
                f"({type(err).__name__}) and no converted copy is cached at {converted}. "
                "Run online once, or point the app at a local checkpoint: --model DIR (or MODEL=DIR)."
            ) from None
        convert_original(original, converted, sha256=DEFAULT_SHA256)
    info = CheckpointInfo(source=f"spaces/{DEFAULT_SPACE}/{DEFAULT_SUBFOLDER} (converted)", revision=revision,
                          weights_sha256=DEFAULT_SHA256, local_dir=converted)
    return converted, info


def resolve(model: str | None = None, revision: str | None = None) -> tuple[Path, CheckpointInfo]:
    """Find a contract checkpoint: ``None``/``"default"`` → the blog's; a directory → itself; else a Hub model repo.

    Hub downloads are pinned to ``revision`` when given and fetch only the contract files, so no
    pickles or remote code are ever pulled.
    """
    if model in (None, "", DEFAULT_MODEL):
        return resolve_default(revision)
    local = Path(model).expanduser()
    if local.is_dir():
        read_contract(local)
        return local, CheckpointInfo(str(local.resolve()), None, sha256_file(local / WEIGHTS), local)
    if local.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise CheckpointError(f"{model} is neither a checkpoint directory nor a Hub repo id (owner/name).")
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id=model, revision=revision, allow_patterns=list(CONTRACT_FILES)))
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(
            f"Could not download {model}{'@' + revision if revision else ''} from the Hub ({type(err).__name__}); "
            "check the name and your connection, or give a local checkpoint folder instead."
        ) from None
    read_contract(folder)
    return folder, CheckpointInfo(model, revision or folder.name, sha256_file(folder / WEIGHTS), folder)


def load_model(local_dir: str | Path):
    """Load a contract checkpoint's ``SegformerForSemanticSegmentation`` (safetensors only, no remote code)."""
    from transformers import SegformerForSemanticSegmentation

    try:
        return SegformerForSemanticSegmentation.from_pretrained(
            local_dir, use_safetensors=True, local_files_only=True
        )
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"Could not load the model in {local_dir}: {type(err).__name__}: {err}".splitlines()[0]) from None


def model_choice(model: str | None = None, revision: str | None = None) -> tuple[str | None, str | None]:
    """The checkpoint to serve: ``model``/``revision`` as given, else ``MODEL``/``MODEL_REVISION`` from
    the environment (as Spaces configure apps), else ``None`` (the blog's checkpoint, latest)."""
    return model or os.environ.get("MODEL") or None, revision or os.environ.get("MODEL_REVISION") or None
