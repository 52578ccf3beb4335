"""Earlier releases of flowdb installed from this repository's own git history.

``release_python(commit)`` gives the Python of a virtualenv with ``commit`` installed:
the release tests make databases with it, the rolling-upgrade proof serves with it.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

from filelock import FileLock

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE = REPO_ROOT / ".cache" / "flowdb-test-releases"  # gitignored


def git(*args: str) -> subprocess.CompletedProcess[bytes]:
    """``git ARGS`` in this repository, output captured, its exit code not checked."""
    return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, check=False)


def release_python(commit: str) -> Path:
    """The Python of a virtualenv with ``commit`` importable, built once and cached.

    The release's tree comes from ``git archive``; a ``.pth`` line puts its ``src`` first
    on the virtualenv's path (flowdb is pure Python and reads no package metadata, so
    no wheel is built: building one in an isolated environment was most of a rebuild's
    time), then this environment's site-packages, whose packages serve as its
    dependencies where they satisfy it. Only those this environment no longer has are
    installed into the virtualenv (today's flowdb dropped ``pydantic-settings``, which
    earlier releases import): this environment's pip installs the release's declared
    dependencies (``pip --python``), and skips the ones it finds. The virtualenv gets no
    pip of its own (``ensurepip`` cost more than the install). Built under a file lock
    (parallel workers build once).
    """
    home = CACHE / commit
    python = home / "venv" / "bin" / "python"
    CACHE.mkdir(parents=True, exist_ok=True)
    with FileLock(str(CACHE / f"{commit}.lock")):
        if (home / "ready").exists():
            return python
        subprocess.run(["rm", "-rf", str(home)], check=True)
        source = home / "source"
        source.mkdir(parents=True)
        archive = git("archive", commit)
        if archive.returncode != 0:
            raise RuntimeError(f"git archive {commit} failed: {archive.stderr.decode()}")
        subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", str(home / "venv")], check=True
        )
        site = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
        paths = [str(source / "src"), *sorted(ours)]
        (Path(site) / "flowdb-test-deps.pth").write_text("\n".join(paths) + "\n")
        project = tomllib.loads((source / "pyproject.toml").read_text(encoding="utf-8"))
        needs = project["project"]["dependencies"]
        pip = [sys.executable, "-m", "pip", "--python", str(python)]
        subprocess.run([*pip, "install", "--quiet", *needs], check=True)
        (home / "ready").write_text(commit + "\n")
    return python
