"""``kepler-top doctor``: what this node offers for measuring power, and what kepler-top does.

It reads, never writes: RAPL zones under --sysfs and whether each can be read, the MSR devices
under --dev-cpu, the CPU from cpuinfo, signs of a virtual machine, the cgroup layout, and which
source ``auto`` would choose, with a fix for each problem found.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import stat
import sys
import time
from typing import Any

from kepler_top.backends import rapl_msr, rapl_sysfs
from kepler_top.errors import SourceUnavailable, UsageError
from kepler_top.sources import open_source

HELP = "diagnose this node: RAPL zones, MSR access, CPU, VM, cgroups, and the source auto picks"
# doctor looks at the node's power sources and nothing of the cluster.
COMMON_FLAGS = ("sysfs", "procfs", "dev_cpu", "model", "debug")

# sys_vendor / product_name text of hypervisors' virtual firmware.
_VM_DMI = ("qemu", "kvm", "vmware", "xen", "microsoft corporation", "innotek", "virtualbox",
           "amazon ec2", "google", "openstack", "parallels", "bochs", "cloud hypervisor",
           "firecracker")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The doctor's own flags; the common ones (--sysfs, --procfs, --dev-cpu) come from cli."""
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="plain text (default) or a JSON document")
    parser.add_argument("--wait", type=_seconds, default=0.5, metavar="SECONDS",
                        help="read readable RAPL counters twice this far apart to see that "
                        "they advance (default 0.5; 0 skips the check)")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 10:
        raise argparse.ArgumentTypeError(f"{text!r} must be from 0 to 10 seconds")
    return value


def run(args: argparse.Namespace) -> int:
    """Print the diagnosis; exit status 0 (a node without meters is a finding, not a failure)."""
    for flag, path in (("--sysfs", args.sysfs), ("--procfs", args.procfs)):
        if not os.path.isdir(path):
            raise UsageError(f"{flag} {path}: no such directory",
                             f"give the path of a {flag[2:]}")
    report = diagnose(sysfs=args.sysfs, procfs=args.procfs, dev_cpu=args.dev_cpu,
                      model=args.model, wait_s=args.wait)
    if args.format == "json":
        sys.stdout.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(render_text(report))
    return 0


def diagnose(*, sysfs: str = "/sys", procfs: str = "/proc", dev_cpu: str = "/dev/cpu",
             model: str | None = None, wait_s: float = 0.0) -> dict[str, Any]:
    """The diagnosis as a plain document (what ``--format json`` prints).

    Args:
        wait_s: read each readable RAPL counter twice this many seconds apart, to tell a live
            counter from a stuck one; 0 skips the check (``advancing`` is then null).
    """
    cpu = _cpu(sysfs, procfs)
    vm = _virtual_machine(sysfs, cpu.pop("flags"))
    sysfs_part = _rapl_sysfs(sysfs, wait_s)
    # The MSR problems are listed in the report; said as warnings too, at each of the two
    # openings below, they would print twice more.
    quiet = rapl_msr.log.level
    rapl_msr.log.setLevel(logging.ERROR)
    try:
        msr_part = _rapl_msr(sysfs, procfs, dev_cpu)
        source, notes = open_source("auto", sysfs=sysfs, procfs=procfs, dev_cpu=dev_cpu,
                                    model=model)
    finally:
        rapl_msr.log.setLevel(quiet)
    model_used = getattr(source, "model", None)
    if hasattr(source, "close"):
        source.close()
    problems = _problems(sysfs_part, msr_part, vm, sysfs)
    return {
        "cpu": cpu,
        "virtual_machine": vm,
        "cgroup": _cgroup(sysfs),
        "rapl_sysfs": sysfs_part,
        "rapl_msr": msr_part,
        "auto": {"source": source.name, "estimated": source.estimated,
                 "zones": list(source.zones), "passed_over": notes,
                 "model": model_used.description if model_used else None},
        "problems": problems,
    }


def _cpu(sysfs: str, procfs: str) -> dict[str, Any]:
    info: dict[str, str] = {}
    logical = 0
    try:
        with open(os.path.join(procfs, "cpuinfo"), encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                key = key.strip()
                if key == "processor":
                    logical += 1
                if sep and key not in info:
                    info[key] = value.strip()
    except OSError:
        pass
    packages = {p for p, _ in rapl_msr.cpu_topology(sysfs).values()}
    return {
        "vendor": info.get("vendor_id"),
        "model_name": info.get("model name"),
        "family": info.get("cpu family"),
        "model": info.get("model"),
        "logical_cpus": logical or None,
        "packages": len(packages) or None,
        "flags": info.get("flags", "").split(),
    }


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _virtual_machine(sysfs: str, flags: list[str]) -> dict[str, Any]:
    dmi = os.path.join(sysfs, "class", "dmi", "id")
    vendor = _read(os.path.join(dmi, "sys_vendor"))
    product = _read(os.path.join(dmi, "product_name"))
    dmi_says = any(v in f"{vendor or ''} {product or ''}".lower() for v in _VM_DMI)
    flag = "hypervisor" in flags
    return {"is_vm": flag or dmi_says, "hypervisor_flag": flag,
            "dmi_vendor": vendor, "dmi_product": product}


def _cgroup(sysfs: str) -> dict[str, Any]:
    root = os.path.join(sysfs, "fs", "cgroup")
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        version, places = "v2", [root]
    elif os.path.exists(os.path.join(root, "unified", "cgroup.controllers")):
        version = "hybrid"
        places = [os.path.join(root, d) for d in ("unified", "cpu", "cpu,cpuacct", "systemd")]
    elif os.path.isdir(os.path.join(root, "cpu")) or os.path.isdir(os.path.join(root, "memory")):
        version = "v1"
        places = [os.path.join(root, d) for d in ("cpu", "cpu,cpuacct", "memory", "systemd")]
    else:
        return {"version": None, "driver": None, "root": root}
    driver = None
    for place in places:
        if os.path.isdir(os.path.join(place, "kubepods.slice")):
            driver = "systemd"
            break
        if os.path.isdir(os.path.join(place, "kubepods")):
            driver = "cgroupfs"
            break
    return {"version": version, "driver": driver, "root": root}


def _rapl_sysfs(sysfs: str, wait_s: float) -> dict[str, Any]:
    found = rapl_sysfs.discover(sysfs)
    zones = []
    for c in found.counters:
        why = rapl_sysfs.probe(c)
        zones.append({"entry": c.entry, "name": c.kernel_name, "zone": c.zone, "path": c.path,
                      "readable": why is None, "reason": why,
                      "max_energy_range_uj": c.max_energy_uj, "advancing": None})
    if wait_s > 0 and any(z["readable"] for z in zones):
        before = {z["path"]: _energy(z["path"]) for z in zones if z["readable"]}
        time.sleep(wait_s)
        for z in zones:
            if z["readable"]:
                after = _energy(z["path"])
                if before[z["path"]] is not None and after is not None:
                    z["advancing"] = after != before[z["path"]]
    try:
        rapl_sysfs.RaplSysfs(sysfs)
    except SourceUnavailable as e:
        usable, reason, fix = False, e.what, e.fix
    else:
        usable, reason, fix = True, None, None
    return {"root": os.path.join(sysfs, "class", "powercap"), "usable": usable,
            "reason": reason, "fix": fix, "zones": zones, "merged": list(found.merged),
            "problems": list(found.problems), "wait_seconds": wait_s}


def _energy(path: str) -> int | None:
    try:
        with open(path, "rb") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _rapl_msr(sysfs: str, procfs: str, dev_cpu: str) -> dict[str, Any]:
    devices = sorted(
        d for d in _listdir(dev_cpu)
        if d.isdigit() and os.path.exists(os.path.join(dev_cpu, d, "msr"))
    )
    part: dict[str, Any] = {"dev_cpu": dev_cpu, "devices": len(devices),
                            "vendor": rapl_msr.cpu_vendor(procfs), "device_mode": None,
                            "device_owner_uid": None}
    if devices:
        st = os.stat(os.path.join(dev_cpu, devices[0], "msr"))
        part.update(device_mode=stat.filemode(st.st_mode), device_owner_uid=st.st_uid)
    try:
        source = rapl_msr.RaplMsr(sysfs=sysfs, procfs=procfs, dev_cpu=dev_cpu)
    except SourceUnavailable as e:
        part.update(usable=False, reason=e.what, fix=e.fix, zones=[], problems=[])
    else:
        part.update(usable=True, reason=None, fix=None, zones=list(source.zones),
                    energy_unit_j=source.energy_unit_j, dram_unit_j=source.dram_unit_j,
                    problems=list(source.problems))
        source.close()
    return part


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _problems(sysfs_part: dict, msr_part: dict, vm: dict, sysfs: str) -> list[dict[str, str]]:
    problems = []
    if not sysfs_part["usable"]:
        fix = sysfs_part["fix"]
        if not os.path.isdir(os.path.join(sysfs, "class", "powercap")):
            if vm["is_vm"]:
                fix = ("this is a virtual machine and its hypervisor passes no RAPL through; "
                       "figures here are estimates (measure on the host, or give --model)")
            else:
                fix = ("load the intel_rapl_msr module (it serves AMD too), and in "
                       "a container mount the host's /sys read-only and pass --sysfs /host/sys")
        problems.append({"problem": sysfs_part["reason"], "fix": fix})
    for z in sysfs_part["zones"]:
        if not z["readable"] and sysfs_part["usable"]:
            problems.append({"problem": f"zone {z['zone']}: {z['reason']}",
                             "fix": "the zone shows as unknown (null); " + rapl_sysfs.ROOT_FIX})
        if z["advancing"] is False and z["zone"] in ("package", "psys"):
            problems.append({
                "problem": f"zone {z['zone']}: {z['path']} did not advance in "
                           f"{sysfs_part['wait_seconds']:g} s",
                "fix": "the counter is stuck (seen in some VMs and with RAPL off in firmware); "
                       "kepler-top shows the zone as unknown; enable RAPL in the firmware, or "
                       "use --source estimator",
            })
    # MSR access matters only where sysfs cannot serve: both read the same counters.
    if not msr_part["usable"] and not sysfs_part["usable"]:
        problems.append({"problem": msr_part["reason"], "fix": msr_part["fix"]})
    if not sysfs_part["usable"]:
        for what in msr_part["problems"]:
            problems.append({"problem": f"rapl-msr: {what}",
                             "fix": "check that every socket's MSR device reads (the msr "
                                    "module, CAP_SYS_RAWIO, /dev/cpu mounted whole), or use "
                                    "--source estimator"})
    return problems


def render_text(report: dict[str, Any]) -> str:
    """The diagnosis as plain text for a person."""
    cpu, vm, cg = report["cpu"], report["virtual_machine"], report["cgroup"]
    s, m, auto = report["rapl_sysfs"], report["rapl_msr"], report["auto"]
    lines = ["kepler-top doctor", ""]
    lines.append(f"CPU              {cpu['model_name'] or 'unknown'} ({cpu['vendor'] or '?'}, "
                 f"family {cpu['family'] or '?'} model {cpu['model'] or '?'}), "
                 f"{cpu['logical_cpus'] or '?'} logical CPUs in "
                 f"{cpu['packages'] or '?'} package(s)")
    why_vm = [w for w, on in (("hypervisor CPU flag", vm["hypervisor_flag"]),
                              (f"DMI vendor {vm['dmi_vendor']}", vm["dmi_vendor"])) if on]
    lines.append(f"virtual machine  {'yes' if vm['is_vm'] else 'no'}"
                 + (f" ({'; '.join(why_vm)})" if why_vm else ""))
    lines.append(f"cgroup           {cg['version'] or 'not found'}, driver "
                 f"{cg['driver'] or 'unknown (no kubepods cgroup)'}")
    lines.append("")
    state = "usable" if s["usable"] else f"not usable: {s['reason']}"
    lines.append(f"rapl-sysfs       {state}")
    for z in s["zones"]:
        ok = "readable" if z["readable"] else f"NOT readable: {z['reason']}"
        if z["advancing"] is not None:
            ok += ", advancing" if z["advancing"] else ", NOT advancing"
        lines.append(f"  {z['entry']:<18} {z['name']:<16} zone {z['zone']:<8} {ok}")
    for note in s["merged"]:
        lines.append(f"  merged: {note}")
    state = "usable" if m["usable"] else f"not usable: {m['reason']}"
    lines.append(f"rapl-msr         {state}")
    mode = (f" ({m['device_mode']}, owner uid {m['device_owner_uid']})"
            if m["device_mode"] else "")
    lines.append(f"  {m['devices']} MSR devices under {m['dev_cpu']}{mode}; CPU vendor "
                 f"{m['vendor'] or 'unknown'}" + (f"; zones {', '.join(m['zones'])}"
                                                 if m["zones"] else ""))
    for what in m["problems"]:
        lines.append(f"  {what}")
    lines.append("")
    kind = "ESTIMATED" if auto["estimated"] else "measured"
    lines.append(f"auto chooses     {auto['source']} ({kind}), zones {', '.join(auto['zones'])}")
    if auto["model"]:
        lines.append(f"  model: {auto['model']}")
    for name, why in auto["passed_over"].items():
        lines.append(f"  passed over {name}: {why.removeprefix(name + ': ')}")
    lines.append("")
    if report["problems"]:
        lines.append("problems and fixes")
        for p in report["problems"]:
            lines.append(f"  - {p['problem']}")
            lines.append(f"    fix: {p['fix']}")
    else:
        lines.append("no problems found")
    return "\n".join(lines) + "\n"
