"""Organ measurements, surfaces and export files for a segmented scan.

All functions take ``organ_masks``: ``(O, D, H, W)`` bool, organs in
:data:`model.labels.ORGANS` order, over the slices of a :class:`model.scan.Scan`.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import labels
from .overlay import encode_mask_png
from .rle import RleVolume, write_rle_csv
from .scan import Scan

#: Label ids in the NIfTI export: the dataset's (0 background, 1 stomach, 2 small bowel, 3 large bowel).
#: A label volume holds one id per voxel, so where organs overlap (multi-label heads) the organ
#: later in this order wins; the PNG zip keeps overlaps (one bit per organ).
NIFTI_LABELS: dict[str, int] = dict(labels.ORGAN_IDS)


@dataclass(frozen=True)
class OrganVolume:
    """One organ's measurements. Slice numbers are the scan's (Kaggle numbers, else 1..D)."""

    organ: str
    voxels: int
    volume_ml: float
    first_slice: int | None
    last_slice: int | None
    largest_area_cm2: float
    largest_slice: int | None


def slice_areas_cm2(organ_masks: np.ndarray, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """Area of each organ on each slice, ``(O, D) float64`` cm²; ``spacing_mm`` is ``(slice, row, col)``."""
    return np.count_nonzero(organ_masks, axis=(2, 3)) * (spacing_mm[1] * spacing_mm[2] / 100.0)


def measure(organ_masks: np.ndarray, scan: Scan) -> list[OrganVolume]:
    """Volume (voxel count × voxel volume), slice range and largest cross-section of each organ."""
    voxel_ml = float(np.prod(scan.spacing_mm)) / 1000.0
    areas = slice_areas_cm2(organ_masks, scan.spacing_mm)
    result = []
    for o, organ in enumerate(labels.ORGANS):
        present = np.flatnonzero(areas[o])
        count = int(np.count_nonzero(organ_masks[o]))
        if present.size:
            biggest = int(np.argmax(areas[o]))
            numbers = scan.slice_numbers
            result.append(OrganVolume(organ, count, count * voxel_ml, numbers[present[0]], numbers[present[-1]],
                                      float(areas[o, biggest]), numbers[biggest]))
        else:
            result.append(OrganVolume(organ, 0, 0.0, None, None, 0.0, None))
    return result


def busiest_slice(organ_masks: np.ndarray) -> int:
    """Index of the slice with the most organ area (all organs together); 0 for an empty prediction."""
    return int(np.argmax(np.count_nonzero(organ_masks, axis=(0, 2, 3)))) if organ_masks.size else 0


def summary_line(scan: Scan, volumes: list[OrganVolume]) -> str:
    """``name: D slices W×H, stomach 123.4 ml, small bowel …`` for the CLI and the UI."""
    d, h, w = scan.shape
    parts = ", ".join(f"{labels.DISPLAY_NAMES[v.organ].lower()} {v.volume_ml:.1f} ml" for v in volumes)
    return f"{scan.name}: {d} slices {w}×{h}, {parts}"


# --------------------------------------------------------------------------- files


def label_volume(organ_masks: np.ndarray) -> np.ndarray:
    """Masks → ``(D, H, W) uint8`` label ids (:data:`NIFTI_LABELS`; later organs win overlaps)."""
    label_ids = np.zeros(organ_masks.shape[1:], dtype=np.uint8)
    for o, organ in enumerate(labels.ORGANS):
        label_ids[organ_masks[o]] = NIFTI_LABELS[organ]
    return label_ids


def save_label_nifti(organ_masks: np.ndarray, scan: Scan, path: str | Path) -> Path:
    """Write the label volume as NIfTI with the scan's affine (voxel axes col, row, slice)."""
    import nibabel as nib

    path = Path(path)
    data = np.ascontiguousarray(label_volume(organ_masks).transpose(2, 1, 0))
    img = nib.Nifti1Image(data, scan.affine)
    img.header.set_xyzt_units("mm")
    img.header.set_qform(scan.affine, code=1)  # scanner coordinates (for Kaggle PNGs: as assumed)
    img.header.set_sform(scan.affine, code=1)
    img.header["descrip"] = " ".join(f"{i}={o}" for o, i in NIFTI_LABELS.items()).encode()
    nib.save(img, path)
    return path


def save_submission_csv(organ_masks: np.ndarray, scan: Scan, path: str | Path) -> Path | None:
    """Kaggle ``id,class,predicted`` rows (1-indexed row-major RLE); ``None`` unless the scan has Kaggle ids.

    Ids need the case and day (``case123_day20``) from a file or folder name, and Kaggle slice numbers.
    """
    if not (scan.kaggle_named and scan.case_day):
        return None
    path = Path(path)
    write_rle_csv(path, [RleVolume(scan.case_day, scan.slice_numbers, organ_masks)], column="predicted")
    return path


def save_mask_png_zip(organ_masks: np.ndarray, scan: Scan, path: str | Path) -> Path:
    """A zip of one bit-packed mask PNG per slice (stomach 1, small bowel 2, large bowel 4)."""
    import io

    path = Path(path)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for d, number in enumerate(scan.slice_numbers):
            buffer = io.BytesIO()
            Image.fromarray(encode_mask_png(organ_masks[:, d]), mode="L").save(buffer, format="PNG")
            archive.writestr(f"{scan.name}/slice_{number:04d}_masks.png", buffer.getvalue())
    return path


#: Triangles per organ surface, roughly: a browser shows ~10⁵ smoothly, and the file stays a few MB.
MAX_FACES_PER_ORGAN = 150_000


def save_organ_meshes(organ_masks: np.ndarray, scan: Scan, path: str | Path,
                      max_faces: int = MAX_FACES_PER_ORGAN) -> Path | None:
    """Marching-cubes surfaces of each organ as one ``.glb``, in the organ colours; ``None`` if all empty.

    Vertices are placed in millimetres with the scan's affine and turned to glTF axes (Y up =
    superior, Z towards the viewer = anterior), centred on the organs, so a viewer shows the
    patient from the front. A ragged surface is meshed on a coarser grid (marching cubes'
    ``step_size``) to stay near ``max_faces`` triangles per organ.
    """
    import trimesh
    from skimage.measure import marching_cubes

    scene = trimesh.Scene()
    # RAS (x right, y anterior, z superior) → glTF (x = patient's left as seen from the front, y up, z front).
    ras_to_gltf = np.array([[-1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]])
    for o, organ in enumerate(labels.ORGANS):
        mask = organ_masks[o]
        if not mask.any():
            continue
        # Pad so surfaces close at the volume's edges; crop to the organ first to save time.
        box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in np.nonzero(mask))
        padded = np.pad(mask[box], 1)
        # Each boundary voxel face gives about two triangles; a step of k cuts that by about k².
        boundary = np.count_nonzero(padded[1:] != padded[:-1]) + np.count_nonzero(padded[:, 1:] != padded[:, :-1]) \
            + np.count_nonzero(padded[:, :, 1:] != padded[:, :, :-1])
        step_size = max(1, int(np.ceil(np.sqrt(2 * boundary / max_faces))))
        padded = padded.astype(np.float32)
        try:
            verts, faces, _, _ = marching_cubes(padded, level=0.5, step_size=step_size, allow_degenerate=False)
        except RuntimeError:  # the coarse grid stepped over a thin organ (a one-slice scan): use every voxel
            verts, faces, _, _ = marching_cubes(padded, level=0.5, step_size=1, allow_degenerate=False)
        verts += np.array([b.start for b in box]) - 1  # back to (slice, row, col) voxel indices
        index_xyz1 = np.c_[verts[:, 2], verts[:, 1], verts[:, 0], np.ones(len(verts))]
        ras = (index_xyz1 @ scan.affine.T)[:, :3]
        mesh = trimesh.Trimesh(ras @ ras_to_gltf.T, faces, process=False)
        if np.linalg.det(scan.affine[:3, :3]) < 0:
            mesh.invert()  # a mirroring affine flips the winding; keep normals pointing out
        colour = [*labels.rgb(organ), 255]
        material = trimesh.visual.material.PBRMaterial(name=organ, baseColorFactor=colour,
                                                       metallicFactor=0.0, roughnessFactor=0.8)
        mesh.visual = trimesh.visual.TextureVisuals(material=material)
        scene.add_geometry(mesh, node_name=organ, geom_name=organ)
    if not scene.geometry:
        return None
    scene.apply_translation(-scene.bounds.mean(axis=0))
    path = Path(path)
    scene.export(path, file_type="glb")
    return path


@dataclass(frozen=True)
class ScanOutputs:
    """The files offered for one segmented scan (``None`` or empty where not applicable), and what went into them.

    ``structures``: the planning structures asked for (:func:`model.planning.planning_structures`).
    ``flags``: the review flags (:func:`model.review.review_flags`), also in ``review``.
    ``dicom``: ``<scan>_seg.dcm`` and ``<scan>_rtstruct.dcm`` for a DICOM series. ``notes``:
    one line each on files not written (not a DICOM series, or the export refused).
    """

    nifti: Path
    masks_zip: Path
    csv: Path | None
    mesh: Path | None
    review: Path | None = None
    dicom: tuple[Path, ...] = ()
    structures: tuple = ()
    flags: tuple = ()
    notes: tuple[str, ...] = ()

    def files(self) -> list[Path]:
        return [p for p in (self.nifti, self.csv, self.masks_zip, self.mesh, self.review, *self.dicom) if p is not None]


def write_outputs(organ_masks: np.ndarray, scan: Scan, out_dir: str | Path, *,
                  probabilities: np.ndarray | None = None, bowel_bag: bool = False, margin_mm: float = 0.0,
                  dicom_files=None) -> ScanOutputs:
    """Write every download for a scan into ``out_dir``, named after the scan; the UI and the CLI share this.

    Always: the label NIfTI (organ ids 1-3 only; planning structures are not in it), the mask
    PNG zip, the surfaces, the Kaggle CSV where the slices are Kaggle-named, and
    ``<scan>_review.csv`` (:mod:`model.review`; its low-confidence rule needs ``probabilities``,
    ``(O, D, H, W)`` float). ``bowel_bag`` and ``margin_mm`` (> 0) ask for planning structures
    (:mod:`model.planning`). ``dicom_files``: the paths the scan was read from; for a DICOM series
    they give ``<scan>_seg.dcm`` and ``<scan>_rtstruct.dcm`` with the organs and those structures
    (:mod:`model.dicom_export`), else a note says why not.
    """
    from .planning import planning_structures
    from .review import review_flags, write_review_csv

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = scan.name
    structures = planning_structures(organ_masks, scan.spacing_mm, bowel_bag_structure=bowel_bag, margin_mm=margin_mm)
    flags = review_flags(organ_masks.transpose(1, 0, 2, 3), scan.spacing_mm,
                         None if probabilities is None else probabilities.transpose(1, 0, 2, 3), scan.slice_numbers)
    dicom, notes = _write_dicom(organ_masks, scan, out_dir, structures, dicom_files) if dicom_files else ((), ())
    return ScanOutputs(
        nifti=save_label_nifti(organ_masks, scan, out_dir / f"{stem}_labels.nii.gz"),
        masks_zip=save_mask_png_zip(organ_masks, scan, out_dir / f"{stem}_masks.zip"),
        csv=save_submission_csv(organ_masks, scan, out_dir / f"{stem}_submission.csv"),
        mesh=save_organ_meshes(organ_masks, scan, out_dir / f"{stem}_organs.glb"),
        review=write_review_csv(flags, out_dir / f"{stem}_review.csv"),
        dicom=dicom, structures=tuple(structures), flags=tuple(flags), notes=notes,
    )


def _write_dicom(organ_masks, scan: Scan, out_dir: Path, structures, dicom_files) -> tuple[tuple[Path, ...], tuple[str, ...]]:
    """The DICOM SEG and RTSTRUCT, or a one-line note on why there are none (never a tag value)."""
    from .dicom_export import NOT_DICOM_NOTE, write_dicom_outputs
    from .scan import ScanError

    if scan.kind != "dicom":
        return (), (NOT_DICOM_NOTE,)
    try:
        return tuple(write_dicom_outputs(organ_masks, dicom_files, out_dir, structures, name=scan.name)), ()
    except Exception as err:  # noqa: BLE001 - the other downloads stand; a writer's own message may quote tags
        for suffix in ("_seg.dcm", "_rtstruct.dcm"):  # no half-written pair
            (out_dir / f"{scan.name}{suffix}").unlink(missing_ok=True)
        reason = str(err) if isinstance(err, ScanError) else f"the export failed ({type(err).__name__})."
        return (), (f"No DICOM SEG or RTSTRUCT: {reason}",)
