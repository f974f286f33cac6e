"""A segmented scan's files: every download of the app, the CLI and train/.

All functions take ``organ_masks``: ``(O, D, H, W)`` bool, organs in :data:`model.labels.ORGANS`
order, over the slices of a :class:`model.scans.Scan`. The steps: the segmenter's
``segment_scan`` (:meth:`model.engines.base.SegmenterBase.segment_scan`) runs the model chunk by
chunk, then :func:`export_scan` writes every download (:func:`write_outputs`) and measures the
organs (:func:`model.measure.measure`).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from . import labels
from .measure import OrganVolume, measure, summary_line
from .mask_png import encode_mask_png
from .metric import bounding_box
from .dicom.rtstruct import TracedSlices
from .planning import PlanningRequest
from .review import SliceSums, review_flags, write_review_csv
from .rle import RleVolume, write_rle_csv
from .scans.base import Scan, ScanError, check_organ_masks

#: Label ids in the NIfTI export: the dataset's (0 background, 1 stomach, 2 small bowel, 3 large bowel).
#: A label volume holds one id per voxel, so where organs overlap (multi-label heads) the organ
#: later in this order wins; the PNG zip keeps overlaps (one bit per organ).
NIFTI_LABELS: dict[str, int] = dict(labels.ORGAN_IDS)


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
    # (col, row, slice) as a view: Fortran-ordered, the order NIfTI stores, so nibabel writes it without
    # reordering (a C-ordered copy first took four times as long on a large scan, for the same bytes).
    data = label_volume(organ_masks).transpose(2, 1, 0)
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


def save_mask_png_zip(organ_masks: np.ndarray, scan: Scan, path: str | Path,
                      pngs: dict[int, bytes] | None = None) -> Path:
    """A zip of one bit-packed mask PNG per slice (stomach 1, small bowel 2, large bowel 4).

    ``pngs``: slices already encoded (:attr:`WrittenParts.slice_pngs`), by slice index; the others are encoded
    here and added to it.
    """
    import io

    pngs = {} if pngs is None else pngs
    path = Path(path)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for d, number in enumerate(scan.slice_numbers):
            if d not in pngs:
                buffer = io.BytesIO()
                Image.fromarray(encode_mask_png(organ_masks[:, d]), mode="L").save(buffer, format="PNG")
                pngs[d] = buffer.getvalue()
            archive.writestr(f"{scan.name}/slice_{number:04d}_masks.png", pngs[d])
    return path


#: Triangles per organ surface, roughly: a browser shows ~10⁵ smoothly, and the file stays a few MB.
MAX_FACES_PER_ORGAN = 150_000


#: An organ's surface: ``(vertices (N, 3) float64 in glTF axes, faces (M, 3) int)``, or ``None`` for an empty organ.
Surface = tuple[np.ndarray, np.ndarray] | None


def save_organ_meshes(organ_masks: np.ndarray, scan: Scan, path: str | Path,
                      max_faces: int = MAX_FACES_PER_ORGAN, surfaces: dict[int, Surface] | None = None) -> Path | None:
    """Marching-cubes surfaces of each organ as one ``.glb``, in the organ colours; ``None`` if all empty.

    Vertices are placed in millimetres with the scan's affine and turned to glTF axes (Y up =
    superior, Z towards the viewer = anterior), centred on the organs, so a viewer shows the
    patient from the front. A ragged surface is meshed on a coarser grid (marching cubes'
    ``step_size``) to stay near ``max_faces`` triangles per organ. ``surfaces``: organs already meshed
    (:attr:`WrittenParts.surfaces`), by organ index; the others are meshed here and added to it.
    """
    import trimesh

    surfaces = {} if surfaces is None else surfaces
    scene = trimesh.Scene()
    for o, organ in enumerate(labels.ORGANS):
        if o not in surfaces:
            surfaces[o] = organ_surface(organ_masks[o], scan.affine, max_faces)
        if surfaces[o] is None:
            continue
        mesh = trimesh.Trimesh(*surfaces[o], process=False)
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


def organ_surface(mask: np.ndarray, affine: np.ndarray, max_faces: int = MAX_FACES_PER_ORGAN) -> Surface:
    """One organ's ``(D, H, W) bool`` mask meshed for :func:`save_organ_meshes`, outward faces; ``None`` if empty."""
    import trimesh
    from skimage.measure import marching_cubes

    if not mask.any():
        return None
    # RAS (x right, y anterior, z superior) → glTF (x = patient's left as seen from the front, y up, z front).
    ras_to_gltf = np.array([[-1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]])
    # Pad so surfaces close at the volume's edges; crop to the organ first to save time.
    box = bounding_box(mask, pad=1)
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
    ras = (index_xyz1 @ affine.T)[:, :3]
    mesh = trimesh.Trimesh(ras @ ras_to_gltf.T, faces, process=False)
    if np.linalg.det(affine[:3, :3]) < 0:
        mesh.invert()  # a mirroring affine flips the winding; keep normals pointing out
    return np.asarray(mesh.vertices), np.asarray(mesh.faces)


@dataclass(frozen=True)
class WrittenParts:
    """What writing one scan's masks computed slice by slice or organ by organ, for a later write of the same
    masks edited on a few slices to take again: each slice's mask PNG (``slice_pngs``, by slice index; the mask
    zip), each organ's surface (``surfaces``, by organ index; the ``.glb``), when the review was scored from
    the model's probabilities its per-slice sums (``review_sums``, :class:`model.review.SliceSums`), and for a
    DICOM series the RTSTRUCT's traced slices (``traced``, :class:`model.dicom.rtstruct.TracedSlices`, found
    by their masks' content).

    An edit that changes a slice makes its PNG, its sums and the surfaces of the organs it changed stale:
    :meth:`without` drops those and marks the sums (``stale_sums``), and the next :func:`write_outputs` computes
    only those again, for the same files and flags (on a large scan, the mask zip and surfaces took 0.23 s of
    every edit, summing the review 0.22 s and tracing the RTSTRUCT 0.19 s). Each write makes its own parts.
    """

    slice_pngs: dict[int, bytes] = field(default_factory=dict)
    surfaces: dict[int, Surface] = field(default_factory=dict)
    review_sums: SliceSums | None = None
    stale_sums: frozenset[int] = frozenset()
    traced: TracedSlices | None = None

    @property
    def nbytes(self) -> int:
        """The memory they hold: a few MB for a large scan (the surfaces' vertices and faces, mostly)."""
        sums = self.review_sums.mass.nbytes + self.review_sums.overlap.nbytes if self.review_sums else 0
        traced = self.traced.nbytes if self.traced else 0
        return sum(map(len, self.slice_pngs.values())) + sum(a.nbytes for s in self.surfaces.values() if s
                                                             for a in s) + sums + traced

    def without(self, before: np.ndarray, after: np.ndarray, slices) -> WrittenParts:
        """These parts for masks ``after`` ``(O, D, H, W) bool``, which differ from ``before`` (those these parts
        were written for) on the slices ``slices`` (indices) only."""
        slices = sorted({int(d) for d in slices})
        changed = (np.asarray(before[:, slices]) != np.asarray(after[:, slices])).any(axis=(1, 2, 3))
        return WrittenParts({d: png for d, png in self.slice_pngs.items() if d not in slices},
                            {o: surface for o, surface in self.surfaces.items() if not changed[o]},
                            self.review_sums, self.stale_sums | frozenset(slices), self.traced)

    def sums(self, organ_masks: np.ndarray, probabilities: np.ndarray) -> SliceSums:
        """The review's per-slice sums of ``organ_masks`` with ``probabilities`` (those these parts were scored
        with): the kept ones with the stale slices summed again, or all of them the first time."""
        if self.review_sums is None:
            return SliceSums.of(organ_masks, probabilities)
        return self.review_sums.updated(organ_masks, probabilities, self.stale_sums)


@dataclass(frozen=True)
class ScanOutputs:
    """The files offered for one segmented scan (``None`` or empty where not applicable), and what went into them.

    ``structures``: the planning structures asked for (:meth:`model.planning.PlanningRequest.structures`).
    ``flags``: the review flags (:func:`model.review.review_flags`), also in ``review``.
    ``dicom``: ``<scan>_seg.dcm`` and ``<scan>_rtstruct.dcm`` for a DICOM series. ``notes``:
    one line each on files not written (not a DICOM series, or the export refused).
    ``edit_log`` and ``corrections``: after edits by hand, ``<scan>_edits.csv`` and
    ``<scan>_corrections.zip`` (:mod:`model.edits`). ``parts``: the slice PNGs and organ surfaces these files
    were made of (:class:`WrittenParts`).
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
    edit_log: Path | None = None
    corrections: Path | None = None
    parts: WrittenParts = field(default_factory=WrittenParts, compare=False, repr=False)

    def files(self) -> list[Path]:
        return [p for p in (self.nifti, self.csv, self.masks_zip, self.mesh, self.review, *self.dicom,
                            self.edit_log, self.corrections) if p is not None]


def write_outputs(organ_masks: np.ndarray, scan: Scan, out_dir: str | Path, *,
                  probabilities: np.ndarray | None = None, planning: PlanningRequest = PlanningRequest(),
                  flags=None, reviewed: frozenset[tuple[int, str]] = frozenset(), edited_organs=frozenset(),
                  parts: WrittenParts = WrittenParts()) -> ScanOutputs:
    """Write every download for a scan into ``out_dir``, named after the scan.

    Always: the label NIfTI (organ ids 1-3 only; planning structures are not in it), the mask
    PNG zip, the surfaces, the Kaggle CSV where the slices are Kaggle-named, and
    ``<scan>_review.csv`` (:mod:`model.review`; its error score needs ``probabilities``,
    ``(O, D, H, W)`` float; without them only the area-jump check runs). ``planning`` asks for planning structures
    (:class:`model.planning.PlanningRequest`). A scan read from a DICOM series also gets ``<scan>_seg.dcm`` and
    ``<scan>_rtstruct.dcm`` with the organs and those structures (:mod:`model.dicom.export`);
    other scans get a note saying why not.

    After edits by hand (:mod:`model.edits`): ``reviewed``, the ``(slice index, organ)`` pairs corrected, which
    the review does not flag (:func:`model.review.review_flags`), or ``flags``, the review flags to write
    instead of scoring again (when the probabilities were not kept); ``edited_organs`` are marked
    SEMIAUTOMATIC in the DICOM exports (the others stay AUTOMATIC); ``parts``: what an earlier write of
    these masks computed and is still true of them (:meth:`WrittenParts.without`), taken instead of computed.
    """

    check_organ_masks(organ_masks, scan.shape)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = scan.name
    structures = planning.structures(organ_masks, scan.spacing_mm)
    sums = None
    if flags is None:
        sums = None if probabilities is None else parts.sums(organ_masks, probabilities)
        flags = review_flags(organ_masks, scan.spacing_mm, probabilities, scan.slice_numbers, reviewed=reviewed,
                             sums=sums)
    # The PNGs, surfaces and traced slices are filled in by the writers.
    written = WrittenParts(dict(parts.slice_pngs), dict(parts.surfaces), sums, traced=TracedSlices(parts.traced))
    dicom, notes = _write_dicom(organ_masks, scan, out_dir, structures, frozenset(edited_organs), written.traced)
    return ScanOutputs(
        nifti=save_label_nifti(organ_masks, scan, out_dir / f"{stem}_labels.nii.gz"),
        masks_zip=save_mask_png_zip(organ_masks, scan, out_dir / f"{stem}_masks.zip", written.slice_pngs),
        csv=save_submission_csv(organ_masks, scan, out_dir / f"{stem}_submission.csv"),
        mesh=save_organ_meshes(organ_masks, scan, out_dir / f"{stem}_organs.glb", surfaces=written.surfaces),
        review=write_review_csv(flags, out_dir / f"{stem}_review.csv"),
        dicom=dicom, structures=tuple(structures), flags=tuple(flags), notes=notes, parts=written,
    )


def _write_dicom(organ_masks, scan: Scan, out_dir: Path, structures, edited_organs: frozenset[str],
                 traced: TracedSlices) -> tuple[tuple[Path, ...], tuple[str, ...]]:
    """The DICOM SEG and RTSTRUCT, or a one-line note on why there are none (never a tag value)."""
    from .dicom.export import NOT_DICOM_NOTE, write_dicom_outputs

    if scan.kind != "dicom":
        return (), (NOT_DICOM_NOTE,)
    try:
        return tuple(write_dicom_outputs(organ_masks, scan, out_dir, structures, edited_organs, traced)), ()
    except Exception as err:  # noqa: BLE001 - the other downloads stand; a writer's own message may quote tags
        for suffix in ("_seg.dcm", "_rtstruct.dcm"):  # no half-written pair
            (out_dir / f"{scan.name}{suffix}").unlink(missing_ok=True)
        reason = str(err) if isinstance(err, ScanError) else f"the export failed ({type(err).__name__})."
        return (), (f"No DICOM SEG or RTSTRUCT: {reason}",)


# --------------------------------------------------------------------------- a segmented scan


@dataclass(frozen=True)
class SegmentedScan:
    """A segmented scan: its masks ``(O, D, H, W) bool``, the files written and the organ measurements.

    ``probabilities``: the model's ``(O, D, H, W) float16`` organ probabilities when the segmentation
    kept them (the review flags score them again after an edit, :class:`model.edits.ScanEdits`).
    """

    scan: Scan
    organ_masks: np.ndarray
    outputs: ScanOutputs
    volumes: list[OrganVolume]
    probabilities: np.ndarray | None = None

    def notes(self) -> list[str]:
        """One line each: the summary, the scan's caveats, and the files not written and why."""
        notes = [summary_line(self.scan, self.volumes) + ".", *self.scan.notes, *self.outputs.notes]
        if self.outputs.csv is None:
            notes.append("No submission CSV: it needs Kaggle slice names in a folder or zip named like case123_day20.")
        return notes


def export_scan(segmentation, scan: Scan, out_dir: str | Path,
                planning: PlanningRequest = PlanningRequest()) -> SegmentedScan:
    """Write a segmented scan's downloads into ``out_dir`` (:func:`write_outputs`) and measure its organs.

    ``segmentation``: the finished :class:`~model.engines.base.ScanSegmentation` of ``scan``; its
    probabilities (kept when asked for: the review flags score them) go on to the result, float16,
    up to 96 MB for the largest scan, for as long as the caller keeps it.
    """
    outputs = write_outputs(segmentation.organ_masks, scan, out_dir, probabilities=segmentation.probabilities,
                            planning=planning)
    return SegmentedScan(scan, segmentation.organ_masks, outputs, measure(segmentation.organ_masks, scan),
                         segmentation.probabilities)
