"""Builds the pod agent zipapp from jobs/agent/ (bot side): same sources → same bytes → same sha256.

The zip holds the package as `agent/` plus a two-line top-level `__main__.py`, so `python3 agent.pyz train` runs
`agent.__main__.main()`. Entries are sorted with fixed timestamps and modes, so the hash names the agent's code.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

AGENT_DIR = Path(__file__).resolve().parent / "agent"
PACKAGE = "agent"
ENTRY = b"import sys\nfrom agent.__main__ import main\n\nsys.exit(main())\n"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def _entry(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data, compresslevel=9)


def build_agent(source: Path = AGENT_DIR) -> tuple[bytes, str]:
    """(zipapp bytes, their sha256 hex) of the agent package in `source`."""
    modules = sorted(p for p in source.glob("*.py") if p.is_file())
    if not any(p.name == "__main__.py" for p in modules):
        raise FileNotFoundError(f"{source} has no __main__.py: it is not the agent package")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        _entry(zf, "__main__.py", ENTRY)
        for path in modules:
            _entry(zf, f"{PACKAGE}/{path.name}", path.read_bytes())
    data = buffer.getvalue()
    return data, hashlib.sha256(data).hexdigest()
