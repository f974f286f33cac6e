"""Safe extraction of an uploaded zip: the scan files it holds, and nothing outside its folder."""

from __future__ import annotations

import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from .base import JUNK, MAX_FILES, ScanError

#: Most bytes a zip may unpack to, counted while extracting (zip bombs).
MAX_ZIP_BYTES = 1 << 30


def extract_zip(zip_path: Path, dst: Path, max_members: int = MAX_FILES,
                max_bytes: int = MAX_ZIP_BYTES) -> list[Path]:
    """Extract a zip's scan files under ``dst``, refusing unsafe archives.

    Refused: absolute or ``..`` member paths, links, encrypted members, nested zips, more
    than ``max_members`` members, and more than ``max_bytes`` uncompressed: by the declared
    sizes before anything is written, and counted again while extracting. Damaged members
    (bad CRC, truncated data, an unsupported compression method) are refused too. Junk
    (``__MACOSX/``, ``.DS_Store``, text files) is skipped. Returns the extracted files,
    sorted by member name.
    """
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        raise ScanError(f"{zip_path.name} is not a readable zip file.") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) > max_members:
            raise ScanError(f"{zip_path.name} has {len(members)} files, over the {max_members}-file limit.")
        if sum(m.file_size for m in members) > max_bytes:
            raise ScanError(f"{zip_path.name} unpacks to over {max_bytes >> 20} MB; refusing it.")
        files, total = [], 0
        for member in sorted(members, key=lambda m: m.filename):
            name = member.filename.replace("\\", "/")
            parts = PurePosixPath(name).parts
            if name.startswith("/") or ".." in parts or (parts and parts[0].endswith(":")):
                raise ScanError(f"{zip_path.name} has an unsafe path ({name}); refusing to extract it.")
            if stat.S_ISLNK(member.external_attr >> 16):
                raise ScanError(f"{zip_path.name} contains a link ({name}); refusing to extract it.")
            if member.flag_bits & 0x1:
                raise ScanError(f"{zip_path.name} is encrypted; upload an unencrypted zip.")
            if JUNK.search(name):
                continue
            if name.lower().endswith((".zip", ".gz", ".tar", ".tgz", ".7z", ".rar")) and not name.lower().endswith(".nii.gz"):
                raise ScanError(f"{zip_path.name} contains another archive ({name}); upload a flat zip.")
            target = dst.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(member) as src, open(target, "wb") as out:
                    while block := src.read(1 << 20):
                        # zipfile stops at the declared size, so this only counts again what was declared.
                        total += len(block)
                        if total > max_bytes:
                            raise ScanError(f"{zip_path.name} unpacks to over {max_bytes >> 20} MB; refusing it.")
                        out.write(block)
            except NotImplementedError:  # e.g. Deflate64, which Windows writes for big folders
                raise ScanError(f"{zip_path.name} uses a compression method Python cannot read ({name}); "
                                "zip it again with standard Deflate.") from None
            except (zipfile.BadZipFile, zlib.error, EOFError):
                raise ScanError(f"{zip_path.name} is damaged ({name} fails its checksum or is cut short); "
                                "upload it again.") from None
            files.append(target)
    return files
