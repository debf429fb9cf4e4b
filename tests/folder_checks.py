"""What a test of a run folder compares: every file's content, so that "nothing was written" or "nothing was lost"
is checked on bytes, not on names or sizes."""
import hashlib
from pathlib import Path


def snapshot(folder) -> dict:
    "SHA-256 of every file under `folder` (hidden ones too), by relative path."
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}
