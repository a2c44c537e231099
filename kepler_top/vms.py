"""Virtual machines: qemu/KVM hypervisor processes and the guest each one runs.

A VM is its hypervisor process (the contract's rule): its name and UUID come from the qemu
command line (``-name guest=...``, ``-uuid``), as libvirt and KubeVirt's virt-launcher write it.
``comm`` is cut to 15 bytes (``qemu-system-x86`` for ``qemu-system-x86_64``) and libvirt may
rename it (``-name ...,process=``), so the executable's name is checked as well.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

_HYPERVISOR_NAMES = ("qemu-kvm", "kvm")


@dataclass(frozen=True, slots=True)
class VmInfo:
    """One guest: its id (the UUID, else the name), name and hypervisor (kvm, xen or qemu)."""

    id: str
    name: str | None
    hypervisor: str


def is_hypervisor(comm: str, exe: str | None) -> bool:
    """Whether a process named ``comm`` running ``exe`` looks like a qemu/KVM hypervisor."""
    names = [comm]
    if exe:
        names.append(os.path.basename(exe.removesuffix(" (deleted)")))
    return any(n.startswith("qemu-system-") or n in _HYPERVISOR_NAMES for n in names)


def _option(argv: Sequence[str], name: str) -> str | None:
    """The value of ``-name value`` or ``--name value`` (qemu accepts both), last one wins."""
    value = None
    for i, arg in enumerate(argv[:-1]):
        if arg in (f"-{name}", f"--{name}"):
            value = argv[i + 1]
    return value


def _suboptions(text: str) -> list[str]:
    """qemu's ``a=b,c=d`` list; ``,,`` is an escaped comma inside a value."""
    return [part.replace("\0", ",") for part in text.replace(",,", "\0").split(",")]


def _guest_name(value: str | None) -> str | None:
    if not value:
        return None
    parts = _suboptions(value)
    for part in parts:
        key, sep, val = part.partition("=")
        if sep and key == "guest":
            return val or None
    # The legacy form: the first item without a key is the guest's name.
    first = parts[0]
    return first if first and "=" not in first else None


def _hypervisor(argv: Sequence[str], comm: str, exe: str | None) -> str:
    if "-xen-domid" in argv or "--xen-domid" in argv:
        return "xen"
    joined = " ".join(argv)
    base = os.path.basename(exe or "")
    if ("-enable-kvm" in argv or "accel=kvm" in joined or _option(argv, "accel") == "kvm"
            or comm in _HYPERVISOR_NAMES or base in _HYPERVISOR_NAMES):
        return "kvm"
    return "qemu"


def detect(
    pid: int, comm: str, exe: str | None, cmdline: Callable[[], Sequence[str]]
) -> VmInfo | None:
    """The guest a hypervisor process runs, or None for any other process.

    Args:
        cmdline: returns the process's argument vector; called only for a hypervisor.
    """
    if not is_hypervisor(comm, exe):
        return None
    argv = list(cmdline())
    if not argv:
        return None  # gone, or a zombie: nothing to name
    name = _guest_name(_option(argv, "name"))
    uuid = _option(argv, "uuid")
    # Limitation: a guest started with neither -uuid nor -name is known by its PID only.
    vm_id = uuid.strip().lower() if uuid else (name or f"pid-{pid}")
    return VmInfo(vm_id, name, _hypervisor(argv, comm, exe))
