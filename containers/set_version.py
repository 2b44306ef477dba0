"""Set the project version once; every image tag follows.

Writes the version into ``pyproject.toml`` and into the ``newTag`` of every kustomize image entry
under ``manifests/`` (keeping a suffix such as ``-cpu``). The components' image tag and
``rfdetr.__version__`` read the installed package metadata, and ``containers/build.sh`` reads
``pyproject.toml``, so after ``pip install -e .`` (``make install``) all of them agree.

Usage: python containers/set_version.py 0.2.0 [--root DIR]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

_VERSION = re.compile(r'^version = "([^"]+)"$', re.MULTILINE)
_SEMVER = re.compile(r"^\d+\.\d+\.\d+([.+-][0-9A-Za-z.+-]+)?$")


def set_version(root: Path, version: str) -> list[Path]:
    """Rewrite the version in ``root``; returns the files changed."""
    if not _SEMVER.match(version):
        raise ValueError(f"version {version!r} is not of the form MAJOR.MINOR.PATCH[suffix]")
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text()
    found = _VERSION.search(text)
    if found is None:
        raise ValueError(f"{pyproject}: no 'version = \"...\"' line")
    old = found.group(1)
    changed = [pyproject] if old != version else []
    pyproject.write_text(_VERSION.sub(f'version = "{version}"', text, count=1))
    tag = re.compile(rf"^(\s*newTag:\s*){re.escape(old)}(\S*)$", re.MULTILINE)
    for kustomization in sorted((root / "manifests").rglob("kustomization.yaml")):
        content = kustomization.read_text()
        updated = tag.sub(rf"\g<1>{version}\g<2>", content)
        if updated != content:
            kustomization.write_text(updated)
            changed.append(kustomization)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args(argv)
    try:
        changed = set_version(args.root, args.version)
    except (ValueError, OSError) as error:
        print(f"set-version: error: {error}", file=sys.stderr)
        return 2
    for path in changed:
        print(f"updated {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
