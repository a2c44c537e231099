"""estimator: node power modelled from CPU use where no meter can be read.

Three models: linear per logical CPU (the default), the Teads/Boavizta TDP curve, and
Kepler 0.7's linear-regressor weights from its model server. Every model sees the same two
facts, the node's CPU usage ratio over the interval and its logical CPU count, and nothing else.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

from kepler_top.errors import KeplerTopError, UsageError

log = logging.getLogger(__name__)

# Cloud Carbon Footprint's AWS averages per vCPU: 0.74 W idle, 3.5 W at full load.
DEFAULT_IDLE_WATTS_PER_CPU = 0.74
DEFAULT_MAX_WATTS_PER_CPU = 3.5

# Teads/Boavizta: share of TDP drawn at 0, 10, 50 and 100 % load, linear in between.
TDP_CURVE = ((0.0, 0.12), (0.10, 0.32), (0.50, 0.75), (1.00, 1.02))

# Kepler's zone blocks -> our zones. Its "platform" is the whole machine, as RAPL psys is.
KEPLER_ZONES = {"package": "package", "core": "core", "uncore": "uncore", "dram": "dram",
                "platform": "psys"}
FIX = "fix the model file (see README, 'Estimator models')"


class Model(Protocol):
    """A power model: watts per zone for the node's CPU use over one interval."""

    description: str

    def watts(self, cpu_usage_ratio: float, cpus: int, interval_s: float = 1.0
              ) -> dict[str, float]: ...


@dataclass(frozen=True, slots=True)
class LinearModel:
    """Watts per logical CPU, linear from idle to full load; the whole figure is zone package."""

    idle_watts_per_cpu: float = DEFAULT_IDLE_WATTS_PER_CPU
    max_watts_per_cpu: float = DEFAULT_MAX_WATTS_PER_CPU
    description: str = "linear per-CPU model, 0.74 W idle to 3.5 W busy (Cloud Carbon Footprint)"

    def watts(self, cpu_usage_ratio: float, cpus: int, interval_s: float = 1.0
              ) -> dict[str, float]:
        per_cpu = self.idle_watts_per_cpu + cpu_usage_ratio * (
            self.max_watts_per_cpu - self.idle_watts_per_cpu
        )
        return {"package": per_cpu * cpus}


@dataclass(frozen=True, slots=True)
class TdpCurveModel:
    """The Teads/Boavizta curve: a share of the node's CPU TDP by load; zone package."""

    tdp_watts: float
    description: str = "TDP curve"

    def watts(self, cpu_usage_ratio: float, cpus: int, interval_s: float = 1.0
              ) -> dict[str, float]:
        load = min(1.0, max(0.0, cpu_usage_ratio))
        for (x0, y0), (x1, y1) in zip(TDP_CURVE, TDP_CURVE[1:]):
            if load <= x1:
                share = y0 + (load - x0) / (x1 - x0) * (y1 - y0)
                break
        return {"package": self.tdp_watts * share}


@dataclass(frozen=True, slots=True)
class KeplerZoneWeights:
    """One zone block of a Kepler model: bias, and (scale, weight) per numerical feature."""

    bias: float
    features: Mapping[str, tuple[float, float]]


@dataclass(frozen=True, slots=True)
class KeplerLinearModel:
    """Kepler 0.7 linear-regressor weights: per zone, bias + sum(weight x value / scale).

    The features kepler-top can supply are the node's CPU time over the interval:
    ``bpf_cpu_time_ms`` (milliseconds, all CPUs together) and ``bpf_cpu_time_us``.
    """

    zones: Mapping[str, KeplerZoneWeights]
    description: str = "Kepler linear-regressor model"
    categorical_ignored: tuple[str, ...] = field(default=())

    def watts(self, cpu_usage_ratio: float, cpus: int, interval_s: float = 1.0
              ) -> dict[str, float]:
        values = kepler_features(cpu_usage_ratio, cpus, interval_s)
        out = {}
        for zone, w in self.zones.items():
            power = w.bias
            for feature, (scale, weight) in w.features.items():
                # Kepler skips a feature whose scale is 0 rather than divide by it.
                if scale and weight:
                    power += weight * values[feature] / scale
            # A regression line can dip below zero at low load; energy cannot.
            out[zone] = max(0.0, power)
        return out


def kepler_features(cpu_usage_ratio: float, cpus: int, interval_s: float) -> dict[str, float]:
    """The Kepler feature values kepler-top can supply for one interval of node CPU use."""
    # Limitation: the value is CPU time over kepler-top's interval, so a model trained at
    # another interval reads off by the ratio of the two; run with the training --interval.
    cpu_ms = cpu_usage_ratio * cpus * interval_s * 1000.0
    return {"bpf_cpu_time_ms": cpu_ms, "bpf_cpu_time_us": cpu_ms * 1000.0}


def _error(path: str, what: str) -> KeplerTopError:
    return KeplerTopError(f"--model {path}: {what}", FIX)


# No node draws more; a model that says so holds a typo (and would print 300-digit watts).
MAX_MODEL_WATTS = 100_000.0


def _number(doc: Mapping[str, Any], key: str, path: str, where: str = "",
            *, negative: bool = False, most: float | None = None) -> float:
    if key not in doc:
        raise _error(path, f"field {where + key!r} is missing")
    value = doc[key]
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))
    if not ok or (not negative and value < 0):
        kind = "a number" if negative else "a non-negative number"
        raise _error(path, f"field {where + key!r} must be {kind}, got {value!r}")
    if most is not None and value > most:
        raise _error(path, f"field {where + key!r} is {value:g}, more than {most:g}: "
                           "a typo?")
    return float(value)


def load_model(path: str) -> Model:
    """Read a model file; see the README's 'Estimator models' for the three formats."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise UsageError(f"--model {path}: no such file", "give the path of a model file")
    except (OSError, UnicodeDecodeError) as e:
        raise KeplerTopError(f"--model {path}: cannot read: {e}", "check the file")
    except json.JSONDecodeError as e:
        raise _error(path, f"not JSON (line {e.lineno}, column {e.colno}: {e.msg})")
    if not isinstance(doc, dict):
        raise _error(path, "top level must be an object")
    if "type" not in doc and any(k in doc for k in KEPLER_ZONES):
        return _kepler(doc, path)
    kind = doc.get("type", "linear")
    if kind == "linear":
        idle = _number(doc, "idle_watts_per_cpu", path, most=MAX_MODEL_WATTS)
        busy = _number(doc, "max_watts_per_cpu", path, most=MAX_MODEL_WATTS)
        if busy < idle:
            raise _error(path, f"field 'max_watts_per_cpu' ({busy}) is below "
                               f"'idle_watts_per_cpu' ({idle})")
        return LinearModel(idle, busy, f"linear per-CPU model from {path}")
    if kind == "tdp-curve":
        tdp = _number(doc, "tdp_watts", path, most=MAX_MODEL_WATTS)
        return TdpCurveModel(tdp, f"TDP-curve model, TDP {tdp:g} W, from {path}")
    if kind == "kepler":
        return _kepler(doc, path)
    raise _error(path, f"field 'type' is {kind!r}, which is not a known model "
                       "(linear, tdp-curve, kepler)")


def _kepler(doc: Mapping[str, Any], path: str) -> KeplerLinearModel:
    supplied = kepler_features(0.0, 1, 1.0)
    zones: dict[str, KeplerZoneWeights] = {}
    ignored: list[str] = []
    for block, zone in KEPLER_ZONES.items():
        if doc.get(block) is None:
            continue
        where = f"{block}.All_Weights."
        weights = doc[block].get("All_Weights") if isinstance(doc[block], dict) else None
        if not isinstance(weights, dict):
            raise _error(path, f"field '{block}.All_Weights' must be an object")
        if weights.get("CurveFit_Weights"):
            raise _error(path, f"field '{where}CurveFit_Weights' is set: a curve-fit model, "
                               "not a linear regressor")
        bias = _number(weights, "Bias_Weight", path, where, negative=True) \
            if "Bias_Weight" in weights else 0.0
        numerical = weights.get("Numerical_Variables", {})
        if not isinstance(numerical, dict):
            raise _error(path, f"field '{where}Numerical_Variables' must be an object")
        features = {}
        for name, spec in numerical.items():
            here = f"{where}Numerical_Variables.{name}."
            if not isinstance(spec, dict):
                raise _error(path, f"field '{here[:-1]}' must be an object")
            scale = _number(spec, "scale", path, here)
            weight = _number(spec, "weight", path, here, negative=True) \
                if "weight" in spec else 0.0
            if not (scale and weight):
                continue
            if name not in supplied:
                raise _error(path, f"field '{here[:-1]}' is a feature kepler-top cannot "
                                   f"supply (it supplies {', '.join(sorted(supplied))})")
            features[name] = (scale, weight)
        if weights.get("Categorical_Variables"):
            ignored.append(block)
        if bias == 0 and not features:
            # Model-db files carry all-zero blocks for zones the training node had no meter
            # for (core, uncore on many servers): not modelled, so absent rather than 0 W.
            continue
        zones[zone] = KeplerZoneWeights(bias, features)
    if not zones:
        raise _error(path, "no zone block with weights (package, core, uncore, dram or platform)")
    if ignored:
        # Limitation: categorical weights (Kepler keys them by CPU architecture names from its
        # own tables) add nothing here; a model that leans on them reads low.
        log.warning("--model %s: Categorical_Variables of %s are ignored", path,
                    ", ".join(ignored))
    name = doc.get("model_name")
    label = f"Kepler model {name}" if isinstance(name, str) and name else "Kepler model"
    return KeplerLinearModel(zones, f"{label} from {path}", tuple(ignored))


class Estimator:
    """Energy per interval predicted from the node's CPU usage ratio.

    Args:
        cpus: logical CPUs on the node (the ``cpuN`` lines of /proc/stat).
        model: the model; the default linear per-CPU one when None.
    """

    name = "estimator"
    estimated = True

    def __init__(self, *, cpus: int, model: Model | None = None) -> None:
        self.cpus = max(1, cpus)
        self.model = model or LinearModel()
        self._zones = tuple(sorted(self.model.watts(0.0, self.cpus, 1.0)))
        self._started = False
        log.info("estimator: %s, %d CPUs", self.model.description, self.cpus)

    @property
    def zones(self) -> tuple[str, ...]:
        return self._zones

    def read(
        self, *, interval_s: float, cpu_usage_ratio: float
    ) -> Mapping[str, float | None] | None:
        if not self._started:
            self._started = True
            return None
        watts = self.model.watts(cpu_usage_ratio, self.cpus, interval_s)
        return {zone: w * interval_s for zone, w in watts.items()}
