"""Pick the BLAS that MLX's CPU backend calls, before MLX is imported.

The `mlx[cpu]` wheel for Linux bundles the netlib reference BLAS, which runs float
matmuls some 30x slower than OpenBLAS. MLX resolves `cblas_*` symbols at load time, so
a BLAS library loaded first with RTLD_GLOBAL takes their place.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("mlx_textgen.blas")

# Debian/Ubuntu, Fedora and generic locations of a multithreaded OpenBLAS.
_CANDIDATES = (
    "/usr/lib/*-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/*-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib64/libopenblasp.so.0",
    "/usr/lib/libopenblas.so.0",
    "/usr/local/lib/libopenblas.so.0",
)


def bundled_reference_blas() -> str | None:
    """The reference BLAS shipped in the mlx-cpu wheel, if this MLX uses one."""
    spec = importlib.util.find_spec("mlx")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        found = sorted(glob.glob(str(Path(location).parent / "mlx_cpu.libs" / "libblas*.so*")))
        if found:
            return found[0]
    return None


def find_system_blas() -> str | None:
    for pattern in _CANDIDATES:
        hits = sorted(glob.glob(pattern))
        if hits:
            return hits[0]
    return None


def select_blas(mode: str = "auto") -> str | None:
    """Load a fast BLAS for MLX's CPU backend; returns the path loaded, or None.

    mode: "auto" (load a system OpenBLAS when MLX ships the reference one), "off", or a path.
    The environment variable MLX_TEXTGEN_BLAS overrides `mode`.
    """
    mode = os.environ.get("MLX_TEXTGEN_BLAS", mode) or "auto"
    if mode == "off":
        log.info("BLAS: left as MLX ships it (--blas off)")
        return None
    if "mlx.core" in sys.modules:
        log.warning("BLAS: MLX is already imported; cannot change its BLAS now")
        return None
    if mode == "auto":
        reference = bundled_reference_blas()
        if reference is None:
            log.info("BLAS: MLX does not bundle the reference BLAS; nothing to replace")
            return None
        path = find_system_blas()
        if path is None:
            log.warning(
                "BLAS: slow path. MLX's bundled reference BLAS is in use; install OpenBLAS "
                "(Debian/Ubuntu: apt-get install libopenblas0-pthread) for ~30x faster CPU matmuls"
            )
            return None
    else:
        path = mode
    try:
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        log.warning("BLAS: could not load %s (%s); MLX keeps its own", path, exc)
        return None
    log.info("BLAS: fast path, %s loaded in place of MLX's bundled BLAS", path)
    return path
