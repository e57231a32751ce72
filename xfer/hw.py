"""Facts about the machine, read once: the CPU's name, clock, vector ISA, cores and this process's affinity.

The machine kind changes between sessions (an AVX2 EPYC one day, an AVX-512 +
AMX Xeon the next), so nothing may assume a width: the FLOP floor and every
quoted number's label come from here.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# ISA features worth naming in a label, widest first (cpuinfo flag -> name).
ISA_NAMES = (("amx_tile", "AMX"), ("avx512_vnni", "AVX-512 VNNI"), ("avx512f", "AVX-512"), ("avx_vnni", "AVX-VNNI"),
             ("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2"))
DEFAULT_MHZ = 2000.0  # where the kernel reports no clock (some VMs, non-x86)


@dataclass(frozen=True)
class Hardware:
    """One reading of the machine; ``hardware()`` caches it for the process."""

    cpu: str
    machine: str
    cores: int          # logical CPUs of the machine
    affinity: int       # CPUs this process may run on
    mhz: float
    flags: frozenset[str]

    @property
    def isa(self) -> list[str]:
        """The vector features present, widest first (``["AVX-512 VNNI", "AVX-512", "AVX2", ...]``)."""
        return [name for flag, name in ISA_NAMES if flag in self.flags]

    @property
    def vector_bits(self) -> int:
        return 512 if "avx512f" in self.flags else 256 if "avx" in self.flags else 128

    @property
    def fp32_flops_per_cycle(self) -> int:
        """Per core: two FMA pipes x fp32 lanes x 2 FLOP when FMA exists, else one multiply and one add per lane."""
        lanes = self.vector_bits // 32
        return 2 * lanes * 2 if "fma" in self.flags or "avx512f" in self.flags else 2 * lanes

    def peak_flops(self, cores: int | None = None) -> tuple[float, str]:
        """fp32 FLOP/s of ``cores`` (default: this process's) at the reported clock, and how it was reckoned."""
        n = cores or self.affinity
        per = self.fp32_flops_per_cycle
        return n * self.mhz * 1e6 * per, f"{n} cores x {self.mhz / 1000:.2f} GHz x {per} FLOP/cycle ({self.vector_bits}-bit)"

    @property
    def label(self) -> str:
        """The label every quoted number carries: ``AMD EPYC, 2 cores (AVX2)``."""
        widest = next((n for n in ("AVX-512", "AVX2", "AVX", "SSE4.2") if n in self.isa), None)
        extra = [n for n in ("AMX", "AVX-512 VNNI", "AVX-VNNI") if n in self.isa]
        isa = ", ".join([*extra, widest] if widest else extra)
        return f"{self.cpu}, {self.affinity} cores" + (f" ({isa})" if isa else "")


def parse_cpuinfo(text: str) -> tuple[str, float, frozenset[str]]:
    """(model name, MHz, flags) of the first processor in a ``/proc/cpuinfo`` text; empty values where absent."""
    name, mhz, flags = "", 0.0, frozenset[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not name:
            name = value.strip()
        elif key == "cpu MHz" and not mhz:
            try:
                mhz = float(value)
            except ValueError:
                mhz = 0.0
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return name, mhz, flags


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@lru_cache(maxsize=1)
def hardware() -> Hardware:
    """This machine, read from ``/proc/cpuinfo`` once per process."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    name, mhz, flags = parse_cpuinfo(text)
    return Hardware(name or platform.processor() or platform.machine(), platform.machine(), os.cpu_count() or 1,
                    _affinity(), mhz or DEFAULT_MHZ, flags)
