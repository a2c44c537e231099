"""Estimator models: default linear, the TDP curve, Kepler 0.7 weights, and bad model files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers_power import FIXTURES, FakeClock, copy_case
from kepler_top.backends.estimator import (Estimator, KeplerLinearModel, LinearModel,
                                           TdpCurveModel, load_model)
from kepler_top.engine import Engine
from kepler_top.errors import KeplerTopError

KEPLER_MODEL = {
    "model_name": "SGDRegressorTrainer_1",
    "package": {"All_Weights": {
        "Bias_Weight": 10.0,
        "Categorical_Variables": {},
        "Numerical_Variables": {"bpf_cpu_time_ms": {"scale": 1000.0, "weight": 0.05}},
    }},
    "dram": {"All_Weights": {
        "Bias_Weight": 2.0,
        "Categorical_Variables": {},
        "Numerical_Variables": {
            "bpf_cpu_time_ms": {"scale": 500.0, "weight": 0.01},
            # weight 0: skipped, as Kepler does, even though we cannot supply it
            "cache_miss": {"scale": 7.0, "weight": 0.0},
        },
    }},
    "platform": {"All_Weights": {
        "Bias_Weight": 30.0,
        "Categorical_Variables": {},
        "Numerical_Variables": {"bpf_cpu_time_us": {"scale": 2_000_000.0, "weight": 4.0}},
    }},
}


def write_model(tmp_path, doc, name="model.json"):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def test_default_linear_model_per_cpu():
    est = Estimator(cpus=2)
    assert est.read(interval_s=0.0, cpu_usage_ratio=0.0) is None
    # 0.74 + 0.5 x (3.5 - 0.74) = 2.12 W per CPU, two CPUs, two seconds
    assert est.read(interval_s=2.0, cpu_usage_ratio=0.5) == {"package": pytest.approx(8.48)}


@pytest.mark.parametrize(("load", "watts"), [
    (0.0, 24.0), (0.10, 64.0), (0.30, 107.0), (0.50, 150.0), (0.75, 177.0), (1.0, 204.0),
])
def test_tdp_curve_follows_the_teads_points_linearly(load, watts):
    # 200 W TDP: 0.12, 0.32, 0.75, 1.02 of it at 0, 10, 50, 100 % load
    assert TdpCurveModel(200.0).watts(load, 8) == {"package": pytest.approx(watts)}


def test_tdp_curve_model_file(tmp_path):
    model = load_model(write_model(tmp_path, {"type": "tdp-curve", "tdp_watts": 150}))
    assert isinstance(model, TdpCurveModel)
    assert model.watts(0.5, 4)["package"] == pytest.approx(112.5)


def test_linear_model_file(tmp_path):
    doc = {"type": "linear", "idle_watts_per_cpu": 0.65, "max_watts_per_cpu": 4.26}
    model = load_model(write_model(tmp_path, doc))
    assert model == LinearModel(0.65, 4.26, model.description)
    assert model.watts(1.0, 10)["package"] == pytest.approx(42.6)


def test_kepler_model_gives_bias_plus_weighted_scaled_features(tmp_path):
    model = load_model(write_model(tmp_path, KEPLER_MODEL))
    assert isinstance(model, KeplerLinearModel)
    est = Estimator(cpus=4, model=model)
    assert est.zones == ("dram", "package", "psys")
    est.read(interval_s=0.0, cpu_usage_ratio=0.0)
    # 25 % of 4 CPUs for 2 s = 2000 ms of CPU time (2e6 us)
    #   package 10 + 0.05 x 2000 / 1000 = 10.1 W; dram 2 + 0.01 x 2000 / 500 = 2.04 W;
    #   platform (psys) 30 + 4 x 2e6 / 2e6 = 34 W
    joules = est.read(interval_s=2.0, cpu_usage_ratio=0.25)
    assert joules == {"package": pytest.approx(20.2), "dram": pytest.approx(4.08),
                      "psys": pytest.approx(68.0)}


def test_kepler_model_db_file_loads_and_all_zero_zones_are_absent(tmp_path):
    # The figures of kepler-model-db's v0.7 ec2 rapl-sysfs AbsPower BPFOnly SGD model 0.
    def block(bias, weight):
        return {"All_Weights": {"Bias_Weight": bias, "Categorical_Variables": {},
                                "Numerical_Variables": {
                                    "bpf_cpu_time_ms": {"scale": 95877.00000000001,
                                                        "weight": weight},
                                    "bpf_page_cache_hit": {"scale": 1.0, "weight": 0.0}}}}
    doc = {"package": block(143.81206324506658, 305.148172889668), "core": block(0.0, 0.0),
           "uncore": block(0.0, 0.0), "dram": block(18.616285480502686, 8.434209551249596)}
    model = load_model(write_model(tmp_path, doc))
    # Half of 96 CPUs for one second: 48000 ms.
    #   package 143.81206 + 305.14817 x 48000 / 95877 = 296.58189 W
    #   dram     18.61629 +   8.43421 x 48000 / 95877 =  22.83880 W
    assert model.watts(0.5, 96, 1.0) == {"package": pytest.approx(296.58189),
                                         "dram": pytest.approx(22.83880)}


def test_kepler_model_through_the_engine_is_estimated(tmp_path):
    root = copy_case("rapl-readable", tmp_path)
    path = write_model(tmp_path, {k: v for k, v in KEPLER_MODEL.items() if k != "platform"})
    clock = FakeClock()
    engine = Engine(sysfs=str(root / "sys"), procfs=str(root / "proc"), source="estimator",
                    model=path, clock=clock, node_name="test")
    engine.sample()
    stat = root / "proc" / "stat"
    # +300 busy ticks and +100 idle on 2 CPUs: usage ratio 0.75
    stat.write_text("cpu  1200 0 600 8100 100 0 0 0 0 0\ncpu0 1 0 1 1 0 0 0 0 0 0\n"
                    "cpu1 1 0 1 1 0 0 0 0 0 0\n")
    clock.now = 1.0
    snap = engine.sample()
    assert snap.node.cpu_usage_ratio == pytest.approx(0.75)
    assert snap.node.estimated is True and snap.node.source == "estimator"
    # 0.75 x 2 CPUs x 1 s = 1500 ms: package 10 + 0.05 x 1.5 = 10.075 W
    assert snap.node.watts == pytest.approx(10.075)
    assert snap.node.zones["dram"].watts == pytest.approx(2.03)


@pytest.mark.parametrize(("doc", "field"), [
    ({"package": {"All_Weights": {"Bias_Weight": 1.0, "Numerical_Variables": {
        "bpf_cpu_time_ms": {"weight": 0.5}}}}},
     "package.All_Weights.Numerical_Variables.bpf_cpu_time_ms.scale"),
    ({"package": {"All_Weights": {"Bias_Weight": "ten"}}}, "package.All_Weights.Bias_Weight"),
    ({"dram": {"weights": {}}}, "dram.All_Weights"),
    ({"package": {"All_Weights": {"Numerical_Variables": {
        "cpu_instructions": {"scale": 1.0, "weight": 2.0}}}}},
     "package.All_Weights.Numerical_Variables.cpu_instructions"),
    ({"package": {"All_Weights": {"CurveFit_Weights": [1.0, 2.0]}}},
     "package.All_Weights.CurveFit_Weights"),
    ({"type": "neural"}, "type"),
    ({"type": "tdp-curve"}, "tdp_watts"),
    ({"type": "linear", "idle_watts_per_cpu": -1, "max_watts_per_cpu": 3},
     "idle_watts_per_cpu"),
    ({"type": "tdp-curve", "tdp_watts": 1.7e308}, "tdp_watts"),
    ({"type": "linear", "idle_watts_per_cpu": 1, "max_watts_per_cpu": float("inf")},
     "max_watts_per_cpu"),
])
def test_bad_model_is_one_line_naming_file_and_field(tmp_path, doc, field):
    path = write_model(tmp_path, doc)
    with pytest.raises(KeplerTopError) as err:
        load_model(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"--model {path}: ")
    assert repr(field) in message or f"'{field}'" in message


def test_a_missing_field_is_called_missing(tmp_path):
    with pytest.raises(KeplerTopError) as err:
        load_model(write_model(tmp_path, {"type": "tdp-curve"}))
    assert "field 'tdp_watts' is missing" in str(err.value)


def test_model_that_is_not_json_names_line_and_column(tmp_path):
    path = write_model(tmp_path, '{"type": "linear",\n  "idle_watts_per_cpu": }')
    with pytest.raises(KeplerTopError) as err:
        load_model(path)
    assert str(err.value).startswith(f"--model {path}: not JSON (line 2, column")


def test_cli_bad_model_exits_1_with_one_line_and_no_traceback(tmp_path):
    path = write_model(tmp_path, {"package": {"All_Weights": {"Numerical_Variables": {
        "bpf_cpu_time_ms": {"weight": 0.5}}}}})
    root = FIXTURES / "rapl-readable"
    done = subprocess.run(
        [sys.executable, "-m", "kepler_top", "--once", "--source", "estimator", "--model", path,
         "--sysfs", str(root / "sys"), "--procfs", str(root / "proc"), "--interval", "0.05"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"kepler-top: error: --model {path}: field ")
    assert "bpf_cpu_time_ms.scale" in lines[0]
