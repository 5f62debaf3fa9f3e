"""Downloads: pinned Debian packages (``apt-get download``) and npm packages (``npm pack``), cached outside the
repository in ``~/.cache/workbench-corpus-build`` (or ``$WORKBENCH_CORPUS_CACHE``) and extracted there."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

CACHE = Path(os.environ.get("WORKBENCH_CORPUS_CACHE", Path.home() / ".cache" / "workbench-corpus-build"))


@dataclass
class Source:
    """One downloaded package: what it is and where its files were extracted."""

    name: str
    version: str
    registry: str
    sha256: str
    root: Path
    licences: list[str] = field(default_factory=list)


def log(message: str) -> None:
    """Print a progress line immediately."""
    print(message, flush=True)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def debian_licences(root: Path, package: str) -> list[str]:
    """The licence of a package's files: the ``License:`` of its ``Files: *`` stanza
    (machine-readable copyright file), else a pointer to its free-form copyright file."""
    copyright_file = root / "usr" / "share" / "doc" / package / "copyright"
    text = copyright_file.read_text(encoding="utf-8", errors="replace")
    main = re.search(r"^Files:\s*\*\s*$.*?^License:\s*(.+?)\s*$", text, flags=re.M | re.S)
    if main:
        return [main.group(1)]
    return [f"free-form, see /usr/share/doc/{package}/copyright in the package"]


def fetch_deb(package: str, version: str) -> Source:
    """Download (once) and extract a pinned Debian package; return it as a Source."""
    debs = CACHE / "deb"
    debs.mkdir(parents=True, exist_ok=True)
    quoted = version.replace(":", "%3a")
    deb = debs / f"{package}_{quoted}_all.deb"
    if not deb.exists():
        log(f"  downloading {package}={version}")
        subprocess.run(
            ["apt-get", "download", f"{package}={version}"], cwd=debs, check=True, stdout=subprocess.DEVNULL
        )
    root = CACHE / "extracted" / f"{package}_{quoted}"
    if not root.exists():
        tmp = root.with_suffix(".tmp")
        subprocess.run(["rm", "-rf", str(tmp)], check=True)
        tmp.mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
        tmp.rename(root)
    return Source(package, version, "Debian", sha256_file(deb), root, debian_licences(root, package))


def fetch_npm(package: str, version: str) -> Source:
    """Download (once) and extract a pinned npm package; return it as a Source."""
    packs = CACHE / "npm"
    packs.mkdir(parents=True, exist_ok=True)
    tarball = packs / f"{package}-{version}.tgz"
    if not tarball.exists():
        log(f"  downloading {package}@{version}")
        subprocess.run(
            ["npm", "pack", "--silent", f"{package}@{version}"],
            cwd=packs,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    root = CACHE / "extracted" / f"npm-{package}-{version}"
    if not root.exists():
        root.mkdir(parents=True)
        subprocess.run(["tar", "xzf", str(tarball), "-C", str(root)], check=True)
    licence = json.loads((root / "package" / "package.json").read_text())["license"]
    return Source(package, version, "npm", sha256_file(tarball), root / "package", [licence])
