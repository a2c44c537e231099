"""Choosing the power source: an explicit one, or ``auto`` with the reasons for its choice."""

from __future__ import annotations

import logging
from typing import Callable

from kepler_top.backends.base import PowerSource
from kepler_top.backends.estimator import Estimator, Model, load_model
from kepler_top.backends.rapl_sysfs import RaplSysfs
from kepler_top.errors import SourceUnavailable, UsageError
from kepler_top.procfs import read_cpu_times

log = logging.getLogger(__name__)

SOURCES = ("rapl-sysfs", "rapl-msr", "estimator")


def _open_rapl_msr(sysfs: str, procfs: str, dev_cpu: str) -> PowerSource:
    try:
        from kepler_top.backends.rapl_msr import RaplMsr
    except ImportError:
        raise SourceUnavailable(
            "rapl-msr: this build has no MSR reader", "use --source rapl-sysfs or estimator"
        ) from None
    return RaplMsr(sysfs=sysfs, procfs=procfs, dev_cpu=dev_cpu)


def open_source(
    source: str,
    *,
    sysfs: str = "/sys",
    procfs: str = "/proc",
    dev_cpu: str = "/dev/cpu",
    model: str | Model | None = None,
) -> tuple[PowerSource, dict[str, str]]:
    """Open the named source, or the first readable one for ``auto``.

    Returns the source and, for ``auto``, why each source before it was passed over.
    An explicit source that cannot be read raises SourceUnavailable: never a silent fallback.
    """
    if source not in ("auto", *SOURCES):
        raise UsageError(
            f"--source {source!r} is not a power source",
            "use auto, rapl-sysfs, rapl-msr or estimator",
        )
    if isinstance(model, str):
        model = load_model(model)

    openers: dict[str, Callable[[], PowerSource]] = {
        "rapl-sysfs": lambda: RaplSysfs(sysfs),
        "rapl-msr": lambda: _open_rapl_msr(sysfs, procfs, dev_cpu),
        "estimator": lambda: Estimator(cpus=read_cpu_times(procfs).cpus, model=model),
    }
    if source != "auto":
        return openers[source](), {}

    notes: dict[str, str] = {}
    for name in SOURCES:
        try:
            chosen = openers[name]()
        except SourceUnavailable as e:
            notes[name] = str(e)
            continue
        log.info("source auto: chose %s%s", name, "".join(f"; {n}" for n in notes.values()))
        return chosen, notes
    raise AssertionError("the estimator is always available")  # pragma: no cover
