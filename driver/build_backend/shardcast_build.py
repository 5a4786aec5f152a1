"""A PEP 517 build backend with no dependencies, so that `pip install ./driver` works offline.

setuptools' wheels need the `wheel` package (setuptools < 70.1), which an offline machine may not
have; this backend writes the wheel (the package, its metadata, the `shardcast-driver` console
script) with the standard library alone. `pip install -e ./driver` gets a wheel whose .pth file
points at this directory.
"""

from __future__ import annotations

import base64
import hashlib
import re
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "shardcast_driver"
NAME = "shardcast-driver"


def _version() -> str:
    text = (ROOT / PACKAGE / "__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


def _metadata() -> str:
    return (f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {_version()}\n"
            "Summary: Copies shards hot-first with native logical replication, in the order shardcast plans\n"
            "Requires-Python: >=3.9\nRequires-Dist: psycopg>=3.1\n")


def _dist_info() -> dict[str, str]:
    return {
        "METADATA": _metadata(),
        "WHEEL": "Wheel-Version: 1.0\nGenerator: shardcast_build\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        "entry_points.txt": f"[console_scripts]\n{NAME} = {PACKAGE}.cli:main\n",
        "top_level.txt": f"{PACKAGE}\n",
    }


def _write_wheel(directory: str, files: dict[str, bytes]) -> str:
    base = f"{PACKAGE}-{_version()}"
    info = f"{base}.dist-info"
    files = {**files, **{f"{info}/{name}": text.encode() for name, text in _dist_info().items()}}
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    wheel = f"{base}-py3-none-any.whl"
    with zipfile.ZipFile(Path(directory) / wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return wheel


def get_requires_for_build_wheel(config_settings=None):
    return []


get_requires_for_build_editable = get_requires_for_build_wheel
get_requires_for_build_sdist = get_requires_for_build_wheel


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    files = {f"{PACKAGE}/{path.name}": path.read_bytes() for path in sorted((ROOT / PACKAGE).glob("*.py"))}
    return _write_wheel(wheel_directory, files)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _write_wheel(wheel_directory, {f"{PACKAGE}.pth": f"{ROOT}\n".encode()})


def build_sdist(sdist_directory, config_settings=None):
    import tarfile

    base = f"{PACKAGE}-{_version()}"
    name = f"{base}.tar.gz"
    with tarfile.open(Path(sdist_directory) / name, "w:gz") as archive:
        for path in ["pyproject.toml", "build_backend/shardcast_build.py",
                     *(f"{PACKAGE}/{p.name}" for p in sorted((ROOT / PACKAGE).glob("*.py")))]:
            archive.add(ROOT / path, f"{base}/{path}")
        info = tarfile.TarInfo(f"{base}/PKG-INFO")
        data = _metadata().encode()
        info.size = len(data)
        import io
        archive.addfile(info, io.BytesIO(data))
    return name
