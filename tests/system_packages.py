"""Install Debian packages a system test needs, or say plainly why they cannot be had (for a skip)."""
from __future__ import annotations

import os
import shutil
import subprocess


def missing_reason(binaries: list[str], packages: list[str], timeout: int = 900) -> str | None:
    """None once every binary is on PATH (installing ``packages`` with apt-get as root if needed),
    otherwise a sentence saying why not."""
    if all(shutil.which(b) for b in binaries):
        return None
    if os.geteuid() != 0:
        return f"needs {', '.join(packages)} ({', '.join(binaries)}) and is not root, so cannot install them"
    if not shutil.which("apt-get"):
        return f"needs {', '.join(packages)} and this machine has no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"'{' '.join(cmd)}' did not finish in {timeout} s"
        if done.returncode != 0:
            return f"'{' '.join(cmd)}' failed: {done.stderr.strip()[-500:]}"
    still = [b for b in binaries if not shutil.which(b)]
    return f"installed {', '.join(packages)} but {', '.join(still)} is still missing" if still else None
