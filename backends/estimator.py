"""estimator: node power modelled from CPU utilisation where no meter can be read."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Mapping

from kepler_top.errors import KeplerTopError

log = logging.getLogger(__name__)

# Cloud Carbon Footprint's AWS averages per vCPU: 0.74 W idle, 3.5 W at full load.
DEFAULT_IDLE_WATTS_PER_CPU = 0.74
DEFAULT_MAX_WATTS_PER_CPU = 3.5


@dataclass(frozen=True, slots=True)
class LinearModel:
    """Watts per logical CPU, linear from idle to full load; the whole figure is zone package."""

    idle_watts_per_cpu: float = DEFAULT_IDLE_WATTS_PER_CPU
    max_watts_per_cpu: float = DEFAULT_MAX_WATTS_PER_CPU
    description: str = "linear per-CPU model, 0.74 W idle to 3.5 W busy (Cloud Carbon Footprint)"

    def watts(self, cpu_usage_ratio: float, cpus: int) -> dict[str, float]:
        per_cpu = self.idle_watts_per_cpu + cpu_usage_ratio * (
            self.max_watts_per_cpu - self.idle_watts_per_cpu
        )
        return {"package": per_cpu * cpus}


def _number(doc: dict, key: str, path: str) -> float:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise KeplerTopError(
            f"--model {path}: field {key!r} must be a non-negative number, got {value!r}",
            "fix the model file (see README, 'Estimator models')",
        )
    return float(value)


def load_model(path: str) -> LinearModel:
    """Read a model file: ``{"type": "linear", "idle_watts_per_cpu": .., "max_watts_per_cpu": ..}``."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise KeplerTopError(f"--model {path}: no such file", "give the path of a model file")
    except (OSError, UnicodeDecodeError) as e:
        raise KeplerTopError(f"--model {path}: cannot read: {e}", "check the file")
    except json.JSONDecodeError as e:
        raise KeplerTopError(
            f"--model {path}: not JSON (line {e.lineno}, column {e.colno}: {e.msg})",
            "fix the model file (see README, 'Estimator models')",
        )
    if not isinstance(doc, dict):
        raise KeplerTopError(f"--model {path}: top level must be an object", "fix the model file")
    kind = doc.get("type", "linear")
    if kind != "linear":
        raise KeplerTopError(
            f"--model {path}: field 'type' is {kind!r}, which is not a known model",
            "use type 'linear'",
        )
    idle = _number(doc, "idle_watts_per_cpu", path)
    busy = _number(doc, "max_watts_per_cpu", path)
    if busy < idle:
        raise KeplerTopError(
            f"--model {path}: field 'max_watts_per_cpu' ({busy}) is below "
            f"'idle_watts_per_cpu' ({idle})",
            "fix the model file",
        )
    return LinearModel(idle, busy, f"linear per-CPU model from {path}")


class Estimator:
    """Energy per interval predicted from the node's CPU usage ratio.

    Args:
        cpus: logical CPUs on the node (the ``cpuN`` lines of /proc/stat).
        model: the model; the default linear per-CPU one when None.
    """

    name = "estimator"
    estimated = True

    def __init__(self, *, cpus: int, model: LinearModel | None = None) -> None:
        self.cpus = max(1, cpus)
        self.model = model or LinearModel()
        self._started = False
        log.info("estimator: %s, %d CPUs", self.model.description, self.cpus)

    @property
    def zones(self) -> tuple[str, ...]:
        return ("package",)

    def read(
        self, *, interval_s: float, cpu_usage_ratio: float
    ) -> Mapping[str, float | None] | None:
        if not self._started:
            self._started = True
            return None
        watts = self.model.watts(cpu_usage_ratio, self.cpus)
        return {zone: w * interval_s for zone, w in watts.items()}
