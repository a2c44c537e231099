"""The command line as a user runs it: ``--once`` on this machine's /proc, and bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import FIXTURES, assert_conserved, assert_contract_document
from kepler_top.snapshot import Snapshot

BUSY = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end:\n    pass\n"


def kepler_top(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kepler_top", *args],
        capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "NODE_NAME": "cli-test-node"},
    )


def host_has_rapl() -> bool:
    return os.path.exists("/sys/class/powercap/intel-rapl:0/energy_uj")


def test_once_json_on_this_machines_proc():
    busy = subprocess.Popen([sys.executable, "-c", BUSY.format(s=20)])
    try:
        time.sleep(0.2)  # let it start burning before the baseline sample
        result = kepler_top("--once", "--format", "json", "--interval", "1")
    finally:
        busy.kill()
        busy.wait()

    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert_contract_document(doc)
    node = doc["node"]
    assert node["name"] == "cli-test-node"
    if not host_has_rapl():
        assert node["source"] == "estimator" and node["estimated"] is True
        assert "rapl-sysfs" in node["source_notes"], "auto says why it passed RAPL over"
    assert doc["interval_seconds"] >= 1.0
    assert node["watts"] > 0 and node["active_watts"] > 0
    assert 0 < node["cpu_usage_ratio"] <= 1
    mine = [p for p in doc["processes"] if p["pid"] == busy.pid]
    assert mine and mine[0]["watts"] > 0, "the busy child is listed with power"
    assert_conserved(Snapshot.from_dict(doc))


def test_once_table_names_the_source_plainly():
    result = kepler_top("--once", "--interval", "0.2",
                        "--procfs", str(FIXTURES / "rapl-wrap-processes/proc"),
                        "--sysfs", str(FIXTURES / "rapl-absent/sys"))
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert "source estimator (ESTIMATED)" in first
    assert "kepler-top: source estimator (passed over:" in result.stderr


MODEL_ERRORS = {
    "not-json": ('{"type": "linear", "idle_watts_per_cpu": 0.7,', "not JSON (line 1"),
    "unknown-type": ('{"type": "cubic"}', "field 'type' is 'cubic'"),
    "negative": ('{"idle_watts_per_cpu": -1, "max_watts_per_cpu": 3}', "'idle_watts_per_cpu'"),
    "max-below-idle": ('{"idle_watts_per_cpu": 5, "max_watts_per_cpu": 3}', "is below"),
    "not-an-object": ("[1, 2]", "top level must be an object"),
}


def assert_one_line_error(result: subprocess.CompletedProcess, status: int, *words: str):
    assert result.returncode == status, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kepler-top: error: ")
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.parametrize("case", sorted(MODEL_ERRORS))
def test_malformed_model_file_is_one_line_exit_1(tmp_path, case):
    text, words = MODEL_ERRORS[case]
    model = tmp_path / f"{case}.json"
    model.write_text(text)
    result = kepler_top("--once", "--interval", "0.1", "--source", "estimator",
                        "--model", str(model))
    assert_one_line_error(result, 1, f"--model {model}", words)


@pytest.mark.parametrize("args, status, words", [
    (["--interval", "abc"], 2, ["--interval", "'abc' is not a number"]),
    (["--interval", "0"], 2, ["--interval", "at least 0.01"]),
    (["--interval", "nan"], 2, ["--interval"]),
    (["--interval", "-5"], 2, ["--interval"]),
    (["--sysfs", "/nonexistent/kepler-top-sys"], 2, ["--sysfs /nonexistent/kepler-top-sys"]),
    (["--procfs", "/nonexistent/kepler-top-proc"], 2, ["--procfs /nonexistent/kepler-top-proc"]),
    (["--source", "rapl-sysfs", "--sysfs", str(FIXTURES / "rapl-absent/sys")], 1,
     ["rapl-sysfs", "no RAPL zones", "estimator"]),
    (["--source", "bogus"], 2, ["--source"]),
    (["--model", "/nonexistent/model.json"], 2, ["--model /nonexistent/model.json"]),
    (["--pod-source", "kubelet", "--kubelet-url", "notaurl"], 2,
     ["--kubelet-url 'notaurl' is not an http(s) URL"]),
    (["export"], 2, ["--once does not go with 'export'"]),
])
def test_bad_input_is_one_clear_line(args, status, words):
    result = kepler_top("--once", "--interval", "0.1", *args) if args[0] != "--interval" \
        else kepler_top("--once", *args)
    assert_one_line_error(result, status, *words)


def test_once_csv_has_a_node_row_and_one_row_per_workload():
    result = kepler_top("--once", "--format", "csv", "--interval", "0.3")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(result.stdout.splitlines()))
    assert rows[0]["level"] == "node" and rows[0]["name"] == "cli-test-node"
    assert float(rows[0]["watts"]) > 0
    assert {r["level"] for r in rows} <= {"node", "namespace", "pod", "container", "process"}
    assert all(r["estimated"] in ("true", "false") for r in rows)


def test_garbage_cpu_line_in_proc_stat_is_one_line_error(tmp_path):
    (tmp_path / "stat").write_text("cpu  a b c d\ncpu0 1 2 3 4\n")
    result = kepler_top("--once", "--procfs", str(tmp_path), "--source", "estimator")
    assert_one_line_error(result, 1, f"{tmp_path}/stat", "not numbers")


def test_output_to_a_full_device_is_one_line_error():
    argv = [sys.executable, "-m", "kepler_top", "--once", "--interval", "0.1",
            "--format", "json", "--no-kube"]
    with open("/dev/full", "w") as full:
        result = subprocess.run(argv, stdout=full, stderr=subprocess.PIPE, text=True,
                                timeout=60)
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert result.returncode == 1
    assert lines == ["kepler-top: error: writing output: No space left on device: "
                     "check the disk and the path"]
    assert "Traceback" not in result.stderr


def test_the_tui_without_a_terminal_says_what_to_use_instead():
    result = subprocess.run([sys.executable, "-m", "kepler_top", "--no-kube"],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=60)
    assert_one_line_error(result, 2, "needs a terminal", "--once")
    assert result.stdout == ""


def test_table_cells_show_control_characters_as_escapes():
    from kepler_top.output import columns

    lines = columns([["PID", "COMM"], ["12", "\x1b[41mRED\x1b[0m\nFAKE"]], {0})
    assert lines[1].endswith("\\x1b[41mRED\\x1b[0m\\x0aFAKE")
    assert all("\x1b" not in line and "\n" not in line for line in lines)


def test_subcommand_help_lists_only_the_common_flags_it_uses(tmp_path):
    replay = kepler_top("replay", "--help")
    assert replay.returncode == 0
    assert "--debug" in replay.stdout
    assert "--source" not in replay.stdout and "--kubeconfig" not in replay.stdout
    doctor = kepler_top("doctor", "--help").stdout
    assert "--sysfs" in doctor and "--model" in doctor and "--pod-source" not in doctor
    assert "--pod-source" in kepler_top("record", "--help").stdout
    # Hidden is not refused: a command line that worked before still parses.
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    accepted = kepler_top("report", str(empty), "--source", "estimator")
    assert "unrecognized arguments" not in accepted.stderr
