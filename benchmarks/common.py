"""What every benchmark script shares: the machine's description, timing, peak memory, and the JSON record.

Every script writes one JSON file, `benchmarks/results/<name>-<device>.json` (or `--out`), with the fields in
`REQUIRED_FIELDS`; `update_readme.py` builds the README's table from those files.
"""
from __future__ import annotations

import ctypes
import datetime as _dt
import gc
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"  # recorded figures (committed); update_readme.py reads these
SCRATCH = ROOT / "runs" / "benchmarks"  # where --tiny runs write by default (runs/ is git-ignored)
REQUIRED_FIELDS = ("name", "device", "device_name", "torch_version", "config", "command", "date", "results",
                   "summary", "tiny")


# ------------------------------------------------------------------------------------------ the machine
def cpu_name() -> str:
    "The CPU model from /proc/cpuinfo (Linux), else what `platform` knows."
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def resolve_device(name: str) -> torch.device:
    "The trainer's rule (`auto`: cuda when present, else cpu), with a refusal printed as a command-line error."
    from awd_edu.distributed import resolve_device as trainer_device
    try:
        return trainer_device(name)
    except (ValueError, RuntimeError) as e:
        raise SystemExit(f"--device {name}: {e}") from None


def begin(args) -> tuple:
    "What every benchmark does first: torch's threads from `--threads`, the device from `--device`, and the load average before it runs, as `(device, load_before)`."
    if args.threads:
        torch.set_num_threads(args.threads)
    return resolve_device(args.device), load_average()


def device_info(device: torch.device) -> dict:
    "Name and facts of `device`: the GPU's name or the CPU model with its core and thread counts."
    info = dict(device=device.type, cpu_name=cpu_name(), cpu_count=os.cpu_count(),
                torch_threads=torch.get_num_threads())
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(device_name=p.name, gpu_memory_gb=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    else:
        info.update(device_name=f"{info['cpu_name']} ({os.cpu_count()} logical cores, "
                                f"torch threads: {torch.get_num_threads()})")
    return info


def device_slug(device: torch.device) -> str:
    "`cpu`, or `cuda-<gpu name>` in lower case with dashes: the `<device>` part of a result's file name."
    if device.type == "cpu":
        return "cpu"
    name = torch.cuda.get_device_name(device).lower()
    return "cuda-" + re.sub(r"[^a-z0-9]+", "-", name).strip("-")


def load_average() -> list | None:
    "The 1, 5 and 15 minute load averages (a noisy machine shows here), or None where the OS has none."
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def git_commit() -> str | None:
    "The commit the working tree is at (read only), or None outside a git clone."
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def portable(path: str | Path) -> str:
    "A path as a record keeps it: relative to the repository when inside it, else its last part; no machine's absolute path."
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return Path(path).name


def _portable_arg(arg: str) -> str:
    "A command-line word with any absolute path in it (`/x/y`, `--flag=/x/y`) made portable."
    flag, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
    return flag + eq + portable(value) if Path(value).is_absolute() else arg


def command_line(script: str | Path, argv: list | None = None) -> str:
    "The command that ran, as typed from the repository root (`python benchmarks/x.py --flag ...`), paths made portable."
    args = [_portable_arg(a) for a in (sys.argv[1:] if argv is None else argv)]
    return "python " + shlex.join([portable(script)] + args)


# ------------------------------------------------------------------------------------------ timing
def sync(device: torch.device):
    "Wait for queued GPU work, so that a wall clock measures it; nothing to do on a CPU."
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> tuple:
    """`(wall, cpu)` seconds that `fn()` takes, the device's queue drained before and after.

    `cpu` is this process's CPU time (all its threads): on a busy machine it counts the work done and not the time
    spent waiting for a core, so with one thread (`--threads 1`) it is the steadier measure of the two.
    """
    sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - w0, time.process_time() - c0


def stats(xs: list) -> dict:
    "Median, quartiles, min and max of a list of numbers (the median is the figure we quote)."
    xs = sorted(xs)
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
    return dict(median=statistics.median(xs), q1=q[0], q3=q[2], min=xs[0], max=xs[-1], n=len(xs))


# ------------------------------------------------------------------------------------------ peak memory
def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _release_freed_memory():
    "Give freed heap memory back to the OS (glibc malloc_trim), so RSS before a step is not padded by old frees."
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    "Reset the kernel's peak-RSS counter (VmHWM) of this process; False where Linux does not allow it."
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory(fn, device: torch.device) -> dict:
    """Peak memory that `fn()` adds on `device`, in MiB, and how it was measured.

    GPU: `torch.cuda.max_memory_allocated` minus what was allocated before (exact, tensors only).
    CPU: the process's peak resident set during `fn` (VmHWM after resetting it) minus the resident set before;
    this counts everything the process touched (allocator slack included), so it is approximate.
    """
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        peak = torch.cuda.max_memory_allocated(device)
        return dict(peak_mib=(peak - before) / 2**20, total_peak_mib=peak / 2**20,
                    method="torch.cuda.max_memory_allocated minus memory_allocated before the step")
    _release_freed_memory()
    if not _reset_peak_rss() or _status_kb("VmRSS") is None:
        fn()
        return dict(peak_mib=None, total_peak_mib=None,
                    method="unavailable: /proc/self/clear_refs cannot reset VmHWM here")
    before = _status_kb("VmRSS")
    fn()
    hwm = _status_kb("VmHWM")
    return dict(peak_mib=(hwm - before) / 1024, total_peak_mib=hwm / 1024,
                method="VmHWM (reset through /proc/self/clear_refs) minus VmRSS before the step; approximate")


def param_mib(module: torch.nn.Module) -> float:
    "Size of `module`'s parameters in MiB (their gradients take as much again)."
    return sum(p.numel() * p.element_size() for p in module.parameters()) / 2**20


# ------------------------------------------------------------------------------------------ the record
def default_out(name: str, device: torch.device, tiny: bool) -> Path:
    "`results/<name>-<device>.json`; a --tiny run goes to runs/benchmarks/ so it never overwrites a recorded figure."
    return (SCRATCH if tiny else RESULTS) / f"{name}-{device_slug(device)}.json"


def record(name: str, script: str | Path, device: torch.device, config: dict, results: dict, summary: str,
           tiny: bool, notes: list | None = None, load_before: list | None = None, argv: list | None = None) -> dict:
    "The JSON record of one run: what ran, where, when, with what, and what came out."
    info = device_info(device)
    return dict(name=name, device=info.pop("device"), device_name=info.pop("device_name"),
                device_details=info, torch_version=torch.__version__, python_version=platform.python_version(),
                platform=platform.platform(), config=config, command=command_line(script, argv),
                date=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
                git_commit=git_commit(), load_average_before=load_before, load_average_after=load_average(),
                tiny=tiny, results=results, summary=summary, notes=list(notes or []))


def _path_names() -> list:
    "`(absolute prefix, what a record writes instead)`, longest prefix first: this machine's paths, made shareable."
    import tempfile
    names = [(str(ROOT) + os.sep, ""), (str(ROOT), "."), (tempfile.gettempdir(), "<temporary folder>"),
             (str(Path.home()), "~")]
    if os.environ.get("AWD_EDU_DATA"):
        names.append((str(Path(os.environ["AWD_EDU_DATA"]).resolve()), "$AWD_EDU_DATA"))
        names.append((os.environ["AWD_EDU_DATA"].rstrip(os.sep), "$AWD_EDU_DATA"))
    return sorted(((a, b) for a, b in names if len(a) > 1), key=lambda ab: -len(ab[0]))


def shareable(value):
    "`value` (a record, or any part of it) with every absolute path of this machine made relative or named."
    if isinstance(value, dict):
        return {k: shareable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [shareable(v) for v in value]
    if isinstance(value, str):
        for prefix, name in _path_names():
            value = value.replace(prefix, name)
    return value


def write_record(rec: dict, out: str | Path) -> Path:
    "Write `rec` as indented JSON to `out` (folders made as needed); one for `results/` holds no path of this machine."
    missing = [k for k in REQUIRED_FIELDS if k not in rec]
    if missing:
        raise ValueError(f"write_record: the record lacks required fields {missing}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    committed = out.resolve().is_relative_to(RESULTS.resolve())   # the records the repository keeps and shows
    out.write_text(json.dumps(shareable(rec) if committed else rec, indent=2, sort_keys=False) + "\n")
    return out


def print_table(rows: list, headers: list):
    "Print `rows` (lists of cells) as an aligned text table."
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for k, r in enumerate(cells):
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            print("  ".join("-" * w for w in widths))
