"""The command line's compilation cache: compiled computations kept on disk between runs.

JAX compiles every bound pass, attack and branch-and-bound kernel on first use, and on a CPU
that is most of a first call: `jaxcert.exact.verify_property` on a property of the ACAS-like
network of benchmarks/bab.py took about 18 s in a fresh process (2.6 s once compiled) and 7.1 s
in a fresh process with JAX's persistent compilation cache filled by an earlier one. VNN-COMP runs
a tool once per instance, so every `jaxcert` command keeps that cache, in
`$XDG_CACHE_HOME/jaxcert/xla` (by default `~/.cache/jaxcert/xla`), unless

* the environment variable JAXCERT_COMPILE_CACHE names another folder, or is "off";
* JAX's own JAX_COMPILATION_CACHE_DIR is set (then JAX uses that folder, as asked).

Library calls are not affected: a library leaves its caller's global JAX configuration alone.
"""

import os
from collections.abc import Mapping
from pathlib import Path

import jax

VARIABLE = "JAXCERT_COMPILE_CACHE"
OFF = ("", "off", "0", "no", "none", "false")
# Every compilation is written (JAX's default keeps only those over 1 s): the many small ones
# add up. The ACAS-like property above took 7.1 s with all 76 cached, 9.4 s with the 12 that
# took over 0.1 s; the folder held 1.1 MB.
MIN_COMPILE_SECONDS = 0.0


def cache_folder(environ: Mapping[str, str] = os.environ) -> str | None:
    """The folder the command line keeps compilations in; None when it keeps none itself
    (switched off, or JAX's own folder set)."""
    if environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None
    chosen = environ.get(VARIABLE)
    if chosen is not None:
        return None if chosen.strip().lower() in OFF else chosen
    base = environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return str(Path(base) / "jaxcert" / "xla")


def enable() -> str | None:
    """Turn the cache on for this process and the worker processes it starts (through their
    environment); returns the folder, or None (also when the folder cannot be made or written:
    the commands then run without the cache)."""
    folder = cache_folder()
    if folder is None:
        return None
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(folder, os.W_OK):
        return None
    os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = str(MIN_COMPILE_SECONDS)
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return folder
