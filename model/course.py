"""A treatment course at a glance: each organ against a target on every day, and the dose it would get.

The target (and, optionally, a planned dose) is drawn on the reference day. Every other day is
registered rigidly to the reference (:func:`model.registration.register`), and the target and dose are
carried onto that day's grid through the registration. This is the "plan not adapted, today's
anatomy" estimate: the dose is not recomputed on the day's anatomy, and bowel that deforms is
seen only through its segmentation, not through the mapping. Research use, not for treatment.

Per day and organ (:class:`OrganDay`): volume, volume inside the target, volume in rings around
it, the smallest surface distance to it, and with a dose Dmax, D0.5cc, D2cc, VxGy, a cumulative
DVH and the user's constraints (:class:`Constraint`, parsed from ``small_bowel:V33Gy<=0.5cc``).

Distances are measured in mm on the scan's own spacing to a smooth surface (:func:`signed_distance_mm`):
the level 0.5 (``skimage.measure.marching_cubes``) of the mask smoothed by a Gaussian of σ = the
finest voxel spacing, equal in mm along every axis. Distance maps on the voxels themselves are
biased by about half a voxel at the staircase of a voxelised surface: scipy's Euclidean transform
measures to the nearest target voxel *centre* (too far, so rings come out too small), the distance
to that voxel's *box* is too near (its corners stick out), and the half-way surface of the bare
mask bulges at its corners (rings too large). Smoothing shrinks a convex target by only about σ²/R.
``docs/course_validation.json`` has the rings of both the smooth surface and scipy's map on the
sphere phantom of ``tests/course_cases.py`` (1.5 × 1.5 × 3 mm voxels) against the analytic shells.

Organ masks are ``(O, D, H, W) bool`` on each day's scan, organs in :data:`model.labels.ORGANS` order.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from . import labels
from .registration import (Registration, check_3d, origins_note, patient_affine, register, registration_from_matrix,
                           resample)
from .dicom.rtdose import Dose
from .measure import volume_ml
from .metric import bounding_box
from .scans.base import Scan, ScanError, check_organ_masks

#: Default ring edges (mm from the target's surface): 0-10 mm and 10-20 mm, the 2 cm within which
#: pancreatic MR-guided adaptive RT recontours the bowel (Radiat Oncol J 2022;40(4)).
RING_EDGES_MM = (0.0, 10.0, 20.0)
#: Default Dx cc volumes reported.
DOSE_VOLUMES_CC = (0.5, 2.0)
#: DVH bin width, Gy.
DVH_BIN_GY = 0.1
#: Least fraction of a day's target the dose grid must cover before its dose numbers are reported.
MIN_DOSE_COVERAGE = 0.5


# --------------------------------------------------------------------------- constraints


_CONSTRAINT = re.compile(
    r"^\s*(?P<organ>[A-Za-z][A-Za-z _]*?)\s*:\s*(?P<metric>Dmax|D(?P<dcc>\d+(?:\.\d+)?)\s*cc|V(?P<vgy>\d+(?:\.\d+)?)\s*Gy)"
    r"\s*(?P<op><=|<)\s*(?P<limit>\d+(?:\.\d+)?)\s*(?P<unit>Gy|cc)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Constraint:
    """``organ``: an :data:`model.labels.ORGANS` key. ``metric``: ``"dmax"``, ``"dcc"`` (the least dose to
    the hottest ``at`` cc) or ``"vgy"`` (the volume receiving at least ``at`` Gy). ``limit``: Gy for
    dose metrics, cc for volume metrics; the constraint holds when the value is ``<=`` it (or ``<``)."""

    text: str
    organ: str
    metric: str
    at: float | None
    limit: float
    strict: bool = False

    @property
    def unit(self) -> str:
        return "cc" if self.metric == "vgy" else "Gy"

    def check(self, value: float | None) -> tuple[str, float | None]:
        """``("pass" | "fail" | "n/a", margin)``: margin = limit − value in the limit's unit (≥ 0 passes)."""
        if value is None:
            return "n/a", None
        margin = self.limit - value
        ok = margin > 0 if self.strict else margin >= 0
        return ("pass" if ok else "fail"), margin


def parse_constraint(text: str) -> Constraint:
    """``"small_bowel:V33Gy<=0.5cc"``, ``"stomach:D0.5cc<=33Gy"``, ``"large_bowel:Dmax<=38Gy"`` → :class:`Constraint`.

    Organs by key or display name, any case. Raises ``ValueError`` with one line when it does not parse.
    """
    match = _CONSTRAINT.match(text or "")
    organs = ", ".join(labels.ORGANS)
    usage = (f"expected ORGAN:METRIC<=LIMIT, e.g. small_bowel:V33Gy<=0.5cc, stomach:D0.5cc<=33Gy or "
             f"large_bowel:Dmax<=38Gy (ORGAN one of {organs})")
    if match is None:
        raise ValueError(f"constraint {text!r} does not parse: {usage}")
    name = "_".join(match["organ"].lower().split())
    by_display = {labels.DISPLAY_NAMES[o].lower().replace(" ", "_"): o for o in labels.ORGANS}
    organ = name if name in labels.ORGANS else by_display.get(name)
    if organ is None:
        raise ValueError(f"constraint {text!r}: unknown organ {match['organ']!r}; one of {organs}")
    metric = "dmax" if match["metric"].lower() == "dmax" else "dcc" if match["dcc"] else "vgy"
    unit = match["unit"].lower()
    if (metric == "vgy") != (unit == "cc"):
        want = "cc" if metric == "vgy" else "Gy"
        raise ValueError(f"constraint {text!r}: a {match['metric']} limit is in {want}, not {match['unit']}")
    at = float(match["dcc"] or match["vgy"]) if metric != "dmax" else None
    if at is not None and at <= 0:
        raise ValueError(f"constraint {text!r}: {match['metric']} needs a positive volume or dose")
    # Its name in the tables: the organ's key (a display name's space would be lost), the rest without spaces.
    return Constraint(f"{organ}:{''.join(text.split(':', 1)[1].split())}", organ, metric, at, float(match["limit"]),
                      match["op"] == "<")


# --------------------------------------------------------------------------- settings and results


@dataclass(frozen=True)
class CourseSettings:
    """What the course reports. ``ring_edges_mm``: increasing distances from the target's surface,
    the first 0 (rings lie between consecutive edges). ``v_gy``: VxGy thresholds, besides those the
    constraints name. ``dose_volumes_cc``: the Dx cc reported."""

    ring_edges_mm: tuple[float, ...] = RING_EDGES_MM
    v_gy: tuple[float, ...] = ()
    dose_volumes_cc: tuple[float, ...] = DOSE_VOLUMES_CC
    constraints: tuple[Constraint, ...] = ()
    dvh_bin_gy: float = DVH_BIN_GY

    def __post_init__(self) -> None:
        edges = tuple(float(e) for e in self.ring_edges_mm)
        if len(edges) < 2 or edges[0] != 0 or any(b <= a for a, b in zip(edges, edges[1:])) or \
                not all(math.isfinite(e) for e in edges):
            raise ValueError(f"ring edges must start at 0 mm and increase, got {self.ring_edges_mm}")
        object.__setattr__(self, "ring_edges_mm", edges)

    @property
    def ring_names(self) -> list[str]:
        """``ring_0_10mm`` for each ring."""
        return [f"ring_{a:g}_{b:g}mm" for a, b in zip(self.ring_edges_mm, self.ring_edges_mm[1:])]

    @property
    def volumes_cc(self) -> list[float]:
        """Every Dx cc reported: the defaults' and the constraints', sorted, once each."""
        return sorted({*self.dose_volumes_cc, *(c.at for c in self.constraints if c.metric == "dcc")})

    @property
    def thresholds_gy(self) -> list[float]:
        """Every VxGy reported: the user's and the constraints', sorted, once each."""
        return sorted({*self.v_gy, *(c.at for c in self.constraints if c.metric == "vgy")})


@dataclass
class OrganDay:
    """One organ on one day. Volumes in cc (= ml), distances in mm, doses in Gy; ``None`` where a
    number does not exist (an absent organ, no dose, an organ smaller than the Dx cc volume).

    ``min_distance_mm``: the smallest distance between the organ's and the target's surfaces
    (:func:`surface_points_mm`), or, when they overlap, minus the depth of the organ's deepest surface
    point inside the target. ``ring_cc``: one volume per ring of :attr:`CourseSettings.ring_names`.
    ``dvh``: ``(doses (B,), volumes_cc (B,))``, the volume receiving at least each dose.
    """

    organ: str
    volume_ml: float
    in_target_cc: float
    ring_cc: list[float]
    min_distance_mm: float | None
    dmax_gy: float | None = None
    dx_cc_gy: dict[float, float | None] = field(default_factory=dict)
    v_gy_cc: dict[float, float] = field(default_factory=dict)
    constraints: list[tuple[Constraint, float | None, str, float | None]] = field(default_factory=list)
    dvh: tuple[np.ndarray, np.ndarray] | None = None


@dataclass
class CourseDay:
    """One day: ``target`` ``(D, H, W) bool`` and ``dose`` ``(D, H, W) float32`` Gy (or ``None``) on its grid."""

    label: str
    scan: Scan
    registration: Registration
    target: np.ndarray
    rings: list[np.ndarray]
    dose: np.ndarray | None
    organs: list[OrganDay]
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[tuple[Constraint, float | None]]:
        return [(c, margin) for o in self.organs for c, _, status, margin in o.constraints if status == "fail"]


@dataclass
class Course:
    """The result of :func:`course`: one :class:`CourseDay` per day, the reference first."""

    reference: str
    settings: CourseSettings
    days: list[CourseDay]

    @property
    def notes(self) -> list[str]:
        """The course's notes, a day that fails a constraint first (with what it fails, by how much)."""
        failing, other = [], []
        for day in self.days:
            if day.failed:
                what = "; ".join(f"{c.text} (over by {-m:.2f} {c.unit})" for c, m in day.failed)
                failing.append(f"{day.label} FAILS {what}")
            other += [f"{day.label}: {n}" for n in day.notes]
        return failing + other


# --------------------------------------------------------------------------- geometry


def surface_points_mm(mask: np.ndarray, spacing_mm: Sequence[float]) -> np.ndarray:
    """``(N, 3) float64`` points of a non-empty mask's surface, ``(slice, row, col)`` mm from voxel ``(0, 0, 0)``.

    The vertices ``skimage.measure.marching_cubes`` finds at level 0.5 of the mask smoothed with a
    Gaussian of σ = the finest voxel spacing, the same in mm along every axis (see the module notes).
    """
    from scipy.ndimage import gaussian_filter
    from skimage.measure import marching_cubes

    spacing = np.asarray(spacing_mm, dtype=np.float64)
    sigma_vox = spacing.min() / spacing
    pad = [int(math.ceil(3 * s)) + 1 for s in sigma_vox]
    box = bounding_box(mask, pad)
    # Padding closes surfaces that the scan's edge cuts, as a planning system closes contours there.
    field = gaussian_filter(np.pad(mask[box], [(p, p) for p in pad]).astype(np.float32), sigma_vox)
    verts = marching_cubes(field, 0.5, spacing=tuple(spacing.tolist()))[0]
    start = np.array([b.start - p for b, p in zip(box, pad)], dtype=np.float64)
    return verts + start * spacing


def signed_distance_mm(target: np.ndarray, spacing_mm: Sequence[float], reach_mm: float = math.inf) -> np.ndarray:
    """``(D, H, W) float32`` mm from each voxel centre to the target's surface: positive outside, negative inside.

    The surface is :func:`surface_points_mm`'s; the distance is to its nearest vertex (``scipy.spatial.cKDTree``),
    which for a point more than a voxel away is close to the distance to the surface itself (the vertices are dense).
    Voxels farther than ``reach_mm`` from the target's bounding box get +inf (they are in no ring).
    An empty target gives +inf everywhere.
    """
    from scipy.spatial import cKDTree

    target = np.asarray(target, dtype=bool)
    result = np.full(target.shape, np.inf, np.float32)
    if not target.any():
        return result
    tree = cKDTree(surface_points_mm(target, spacing_mm))
    pad = [int(math.ceil(reach_mm / s)) + 1 if math.isfinite(reach_mm) else n for s, n in zip(spacing_mm, target.shape)]
    box = bounding_box(target, pad)
    points = np.stack(np.meshgrid(*[np.arange(b.start, b.stop) * s for b, s in zip(box, spacing_mm)], indexing="ij"),
                      axis=-1).reshape(-1, 3)
    distance = tree.query(points)[0].reshape(result[box].shape)
    result[box] = np.where(target[box], -distance, distance)
    return result


def min_distance_mm(organ: np.ndarray, target: np.ndarray, spacing_mm: Sequence[float]) -> float | None:
    """The smallest distance (mm) between an organ's and the target's surfaces (:func:`surface_points_mm`);
    when they overlap, minus the depth of the organ's deepest surface point inside the target.
    ``None`` for an absent organ or target."""
    from scipy.spatial import cKDTree

    if not organ.any() or not target.any():
        return None
    organ_surface = surface_points_mm(organ, spacing_mm)
    distance = cKDTree(surface_points_mm(target, spacing_mm)).query(organ_surface)[0]
    if not (organ & target).any():
        return float(distance.min())
    # Which of the organ's surface points lie inside the target: the target's value at their nearest voxel.
    voxel = np.rint(organ_surface / np.asarray(spacing_mm)).astype(np.int64)
    voxel = np.clip(voxel, 0, np.array(target.shape) - 1)
    inside = target[tuple(voxel.T)]
    return -float(distance[inside].max()) if inside.any() else 0.0


def rings(signed: np.ndarray, edges_mm: Sequence[float]) -> list[np.ndarray]:
    """``(D, H, W) bool`` per ring: outside the target, ``a < distance <= b`` for consecutive edges."""
    return [(signed > a) & (signed <= b) for a, b in zip(edges_mm, edges_mm[1:])]


# --------------------------------------------------------------------------- dose


def dose_numbers(doses_gy: np.ndarray, voxel_cc: float, settings: CourseSettings) -> dict:
    """Dmax, Dx cc, VxGy and the cumulative DVH of one organ's voxel doses ``(N,) float``.

    Dx cc is the least dose among the hottest ``x`` cc (the ``ceil(x / voxel)`` hottest voxels);
    ``None`` when the organ is smaller than ``x``. VxGy counts voxels with at least ``x`` Gy.
    """
    hottest = np.sort(np.asarray(doses_gy, dtype=np.float64))[::-1]
    result: dict = {"dmax": float(hottest[0]) if hottest.size else None, "dcc": {}, "vgy": {}}
    for x in settings.volumes_cc:
        n = int(math.ceil(x / voxel_cc - 1e-9))
        result["dcc"][x] = float(hottest[n - 1]) if 0 < n <= hottest.size else None
    ascending = hottest[::-1]
    for x in settings.thresholds_gy:
        result["vgy"][x] = (ascending.size - int(np.searchsorted(ascending, x, side="left"))) * voxel_cc
    top = float(hottest[0]) if hottest.size else 0.0
    bins = np.arange(0.0, top + settings.dvh_bin_gy, settings.dvh_bin_gy)
    counts = ascending.size - np.searchsorted(ascending, bins, side="left")
    result["dvh"] = (bins, counts * voxel_cc)
    return result


def dose_on(scan: Scan, dose: Dose, scan_to_reference: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The dose sampled on ``scan``'s voxels (trilinear), and ``(D, H, W) bool`` where the grid covers them.

    ``scan_to_reference``: RAS ``(4, 4)`` from the day's frame to the reference's, where the dose lies.
    """
    onto = patient_affine(scan)
    gy = resample(dose.gy, dose.affine, scan.shape, onto, scan_to_reference, linear=True)
    covered = resample(np.ones(dose.gy.shape, np.uint8), dose.affine, scan.shape, onto, scan_to_reference,
                       linear=False).astype(bool)
    return gy.astype(np.float32), covered


def check_dose_overlap(reference: Scan, dose: Dose) -> None:
    """:class:`ScanError` when the dose grid covers none of the reference scan."""
    _, covered = dose_on(reference, dose)
    if not covered.any():
        lo, hi = _extent(dose.affine, dose.gy.shape), _extent(patient_affine(reference), reference.shape)
        raise ScanError(f"The dose grid {dose.name} does not overlap the reference scan {reference.name} "
                        f"(dose spans RAS {_fmt_box(lo)}, the scan {_fmt_box(hi)} mm).")


def _extent(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    d, h, w = shape
    corners = np.array([[c, r, s, 1.0] for c in (0, w - 1) for r in (0, h - 1) for s in (0, d - 1)])
    points = (affine @ corners.T)[:3]
    return np.stack([points.min(axis=1), points.max(axis=1)])


def _fmt_box(box: np.ndarray) -> str:
    return " to ".join("(" + ", ".join(f"{v:.0f}" for v in corner) + ")" for corner in box)


# --------------------------------------------------------------------------- the course


def measure_day(target: np.ndarray, organ_masks: np.ndarray, spacing_mm: Sequence[float],
                dose_gy: np.ndarray | None, settings: CourseSettings) -> tuple[list[OrganDay], list[np.ndarray]]:
    """Every organ against ``target`` ``(D, H, W) bool`` on one grid, with ``dose_gy`` ``(D, H, W)`` if given.

    Returns the organs and the ring masks.
    """
    voxel_cc = volume_ml(1, spacing_mm)  # for the dose numbers
    signed = signed_distance_mm(target, spacing_mm, settings.ring_edges_mm[-1])
    ring_masks = rings(signed, settings.ring_edges_mm)
    organs = []
    for o, organ in enumerate(labels.ORGANS):
        mask = organ_masks[o]
        day = OrganDay(organ, volume_ml(np.count_nonzero(mask), spacing_mm),
                       volume_ml(np.count_nonzero(mask & target), spacing_mm),
                       [volume_ml(np.count_nonzero(mask & ring), spacing_mm) for ring in ring_masks],
                       min_distance_mm(mask, target, spacing_mm))
        if dose_gy is not None:
            numbers = dose_numbers(dose_gy[mask], voxel_cc, settings)
            day.dmax_gy, day.dx_cc_gy, day.v_gy_cc, day.dvh = (numbers["dmax"], numbers["dcc"], numbers["vgy"],
                                                               numbers["dvh"])
            for c in settings.constraints:
                if c.organ != organ:
                    continue
                value = {"dmax": numbers["dmax"], "dcc": numbers["dcc"].get(c.at), "vgy": numbers["vgy"].get(c.at)}[c.metric]
                if value is None and c.metric == "dmax":
                    value = 0.0  # an absent organ gets no dose
                day.constraints.append((c, value, *c.check(value)))
        organs.append(day)
    return organs, ring_masks


def course(reference: str, target: np.ndarray, days: Sequence[tuple[str, Scan, np.ndarray]], dose: Dose | None = None,
           settings: CourseSettings = CourseSettings(),
           registrations: dict[str, Registration] | None = None) -> Course:
    """The course of ``days`` (``(label, scan, organ_masks)``, any order) against ``target`` on day ``reference``.

    ``target``: ``(D, H, W) bool`` on the reference scan. ``dose``: on the reference day's frame.
    ``registrations``: known ones by day label (reference → day, ``a_to_b``); the others are
    registered with :func:`model.registration.register`. Raises :class:`ScanError` for a course of one day,
    an unknown reference, an empty target, a dose that misses the reference scan.
    """
    by_label = {label: (scan, masks) for label, scan, masks in days}
    if len(by_label) < 2:
        raise ScanError(f"A course needs two or more days; got {len(by_label)}.")
    if reference not in by_label:
        raise ScanError(f"The reference day {reference!r} is not among the days: {', '.join(by_label)}.")
    ref_scan = by_label[reference][0]
    target = np.asarray(target, dtype=bool)
    if target.shape != ref_scan.shape:
        raise ScanError(f"The target is {target.shape} (slices, rows, columns); the reference scan is {ref_scan.shape}.")
    if not target.any():
        raise ScanError("The target is empty on the reference scan.")
    if settings.constraints and dose is None:
        raise ScanError("Dose constraints need a dose (--dose RTDOSE).")
    for label, scan, masks in days:
        check_organ_masks(masks, scan.shape, f"organ masks of {label}")
    if dose is not None:
        check_dose_overlap(ref_scan, dose)
    registrations = dict(registrations or {})
    order = [reference] + [label for label, _, _ in days if label != reference]
    result = []
    for label in order:
        scan, masks = by_label[label]
        notes = []
        day_to_reference = None  # the reference day's own frame
        if label == reference:
            reg = registrations.get(label) or registration_from_matrix(np.eye(4), ref_scan)
            on_day = target
        else:
            check_3d(scan, label)
            if origins := origins_note(ref_scan, scan, reference, label):
                notes.append(origins)
            reg = registrations.get(label) or register(ref_scan, scan)
            # a_to_b carries a reference point to the same anatomy on the day; sampling needs the way back.
            day_to_reference = np.linalg.inv(reg.a_to_b)
            on_day = resample(target, patient_affine(ref_scan), scan.shape, patient_affine(scan),
                              day_to_reference, linear=False) > 0.5
            if not on_day.any():
                raise ScanError(f"The target mapped onto {label} lies outside its scan.")
        gy = None
        if dose is not None:
            gy, covered = dose_on(scan, dose, day_to_reference)
            share = np.count_nonzero(covered & on_day) / np.count_nonzero(on_day)
            if share < 1.0:
                notes.append(f"the dose grid covers {100 * share:.0f}% of the target; dose outside it counts as 0 Gy.")
            if share < MIN_DOSE_COVERAGE:
                gy = None
                notes.append("dose numbers left out: the dose grid covers too little of the mapped target.")
        organs, ring_masks = measure_day(on_day, masks, scan.spacing_mm, gy, settings)
        result.append(CourseDay(label, scan, reg, on_day, ring_masks, gy, organs, notes))
    return Course(reference, settings, result)
