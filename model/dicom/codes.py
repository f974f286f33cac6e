"""The codes and UIDs of the DICOM standard this project writes and reads, with readable names.

The one home for them: the writers use them as they are, the readers invert them here.
"""

from __future__ import annotations

from .. import __version__

#: SOP classes of the derived objects (never source images): DICOM SEG and RT Structure Set. The scan
#: reader skips them by pydicom's names for the same UIDs (model.scans must not import this package).
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
#: RT Dose Storage: a planned dose grid, read (never written) by the course report.
RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
#: Study Component Management: the usual Referenced SOP Class of an RTSTRUCT's study reference.
STUDY_COMPONENT_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"

#: SNOMED CT category "Anatomical Structure" (a SEG segment's property category).
ANATOMICAL_STRUCTURE = "91723000"
#: SNOMED CT codes: structure key → (code, meaning). The organs, and the bowel bag as "Intestinal structure".
ANATOMY_CODES: dict[str, tuple[str, str]] = {
    "stomach": ("69695003", "Stomach"),
    "small_bowel": ("30315005", "Small intestine"),
    "large_bowel": ("14742008", "Large intestine"),
    "bowel_bag": ("113276009", "Intestinal structure"),
}
#: The organ a SNOMED CT anatomy code names (the inverse of :data:`ANATOMY_CODES`, organs only).
ORGAN_FOR_CODE: dict[str, str] = {code: key for key, (code, _) in ANATOMY_CODES.items() if key != "bowel_bag"}

#: Who made the files: Manufacturer, Manufacturer's Model Name, and the algorithm's name.
MANUFACTURER = "uwmgi research demo"
MODEL_NAME = "GI tract segmentation"
ALGORITHM_NAME = "GI tract segmentation (research demo)"
#: Software Versions and the algorithm version: the package's own version.
SOFTWARE_VERSION = __version__
