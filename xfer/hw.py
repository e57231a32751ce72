"""Facts about the machine, read once: vendor, family, clock, vector ISA, matrix units, caches, cores and affinity.

The machine kind changes between sessions (an AVX2 EPYC one day, an AVX-512 +
AMX Xeon the next, a Zen 4 EPYC that has AVX-512 flags but 256-bit pipes the
day after), so nothing may assume a width: every floor and every quoted
number's label come from here.

Peak rates per core and cycle (what the floors divide by) follow from the
datapath, not only the flags: Zen 4 (AMD family 25) executes 512-bit
instructions on two 256-bit pipes, so AVX-512 doubles nothing there; Zen 5
(family 26) and Intel's AVX-512 cores have 512-bit pipes. Two FMA pipes are
assumed (every x86 server core since Haswell; a few low-end Xeons with one
512-bit FMA unit cannot be told apart from cpuinfo, and would run at half).
The clock is measured (a chain of dependent adds in the kernel, one per cycle):
a VM's cpuinfo shows the nominal clock, and the cores boost past it.

``XFER_ISA`` (``avx512``, ``avx2``, ``baseline``) pins a narrower ISA: the
kernel dispatches to it and these facts drop the wider features, so a run on
an AVX-512 host shows what an AVX2-only host would compute. ONNX Runtime's
MLAS picks its kernels by CPUID with no run-time switch, so its own timings
still use the real ISA (the report says so).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from xfer.config import ISA_VAR
from xfer.errors import XferError
from xfer.preprocess import clock_mhz
from xfer.records import Record

# ISA features worth naming in a label, widest first (cpuinfo flag -> name).
ISA_NAMES = (("amx_int8", "AMX-INT8"), ("amx_bf16", "AMX-BF16"), ("amx_tile", "AMX"),
             ("avx512_vnni", "AVX-512 VNNI"), ("avx512_bf16", "AVX-512 BF16"), ("avx512_fp16", "AVX-512 FP16"),
             ("avx512f", "AVX-512"), ("avx_vnni", "AVX-VNNI"), ("avx2", "AVX2"), ("fma", "FMA"), ("avx", "AVX"),
             ("sse4_2", "SSE4.2"))
DEFAULT_MHZ = 2000.0  # where cpuinfo reports no clock (some VMs, non-x86) and none is measured
FMA_PIPES = 2
PRECISIONS = ("fp32", "int8", "bf16")
# Flags each pinned ISA removes (XFER_ISA); "avx512" removes nothing the kernel uses.
PINS = {"avx512": frozenset(),
        "avx2": frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd", "avx512_vnni", "avx512_bf16",
                           "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16"}),
        "baseline": frozenset({"avx", "avx2", "fma", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512dq",
                               "avx512cd", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8",
                               "amx_bf16"})}


@dataclass(frozen=True)
class Cache(Record):
    """One level of cache as ``/sys`` describes it for CPU 0."""

    level: int
    kind: str  # Data, Instruction, Unified
    kib: int


@dataclass(frozen=True)
class Peak(Record):
    """A peak rate of the cores this process may use, and how it was reckoned (quoted beside every floor)."""

    precision: str       # fp32, int8, bf16
    ops_per_s: float     # FLOP/s, or int8 OP/s (a multiply-add is 2)
    per_cycle: int       # per core
    unit: str            # what computes it: "AVX-512 FMA on 2x256-bit pipes", "AMX-INT8 tiles", ...
    how: str


@dataclass(frozen=True)
class MachineFacts(Record):
    """What a bench JSON records about the machine, beside the label."""

    vendor: str
    family: int
    model: int
    mhz: float            # what /proc/cpuinfo reports (the nominal clock in most VMs)
    vector_bits: int
    datapath_bits: int
    caches: list[Cache]
    peaks: dict[str, Peak]
    pinned_isa: str | None = None
    measured_mhz: float = 0.0  # the clock the cores ran a chain of dependent adds at (0: not measured)


@dataclass(frozen=True)
class Hardware:
    """One reading of the machine; ``hardware()`` caches it for the process."""

    cpu: str
    machine: str
    cores: int          # logical CPUs of the machine
    affinity: int       # CPUs this process may run on
    mhz: float
    flags: frozenset[str]
    vendor: str = ""    # GenuineIntel, AuthenticAMD, ...
    family: int = 0
    model: int = 0
    caches: tuple[Cache, ...] = field(default_factory=tuple)
    pinned: str | None = None  # XFER_ISA, when set
    measured_mhz: float = 0.0  # the kernel's clock measurement; 0 where none was made

    @property
    def clock_mhz(self) -> float:
        """The clock peaks are reckoned at: the faster of the reported and the measured one. A VM's cpuinfo reports
        the nominal clock while the cores boost past it (2.6 vs 3.6 GHz on a Zen 4 EPYC); a peak at the nominal
        clock would put every compute floor above what the machine can do."""
        return max(self.mhz, self.measured_mhz)

    @property
    def clock_note(self) -> str:
        if self.measured_mhz > self.mhz:
            return f"{self.clock_mhz / 1000:.2f} GHz measured (cpuinfo {self.mhz / 1000:.2f})"
        return f"{self.clock_mhz / 1000:.2f} GHz"

    @property
    def isa(self) -> list[str]:
        """The vector and matrix features present, widest first (``["AVX-512 VNNI", "AVX-512", "AVX2", ...]``)."""
        return [name for flag, name in ISA_NAMES if flag in self.flags]

    @property
    def vector_bits(self) -> int:
        """The widest vector the ISA offers."""
        return 512 if "avx512f" in self.flags else 256 if "avx" in self.flags else 128

    @property
    def datapath_bits(self) -> int:
        """The width the pipes execute: Zen 4 and older AMD split 512-bit instructions over 256-bit pipes."""
        if self.vector_bits == 512 and self.vendor == "AuthenticAMD" and self.family < 26:
            return 256
        return self.vector_bits

    @property
    def fma(self) -> bool:
        return "fma" in self.flags or "avx512f" in self.flags

    @property
    def fp32_flops_per_cycle(self) -> int:
        """Per core: FMA pipes x fp32 lanes of the datapath x 2 FLOP, else one multiply and one add per lane."""
        lanes = self.datapath_bits // 32
        return FMA_PIPES * lanes * 2 if self.fma else 2 * lanes

    @property
    def int8_ops_per_cycle(self) -> tuple[int, str]:
        """Per core, int8 multiply-adds x 2, and the unit: AMX tiles, VNNI dot products, or the two-step AVX2 form."""
        if {"amx_tile", "amx_int8"} <= self.flags:
            return 2 * 1024, "AMX-INT8 tiles (1,024 MAC/cycle)"
        macs = FMA_PIPES * self.datapath_bits // 8  # a VNNI dot product: 4 byte MACs per 32-bit lane
        vnni = "avx512_vnni" in self.flags and self.vector_bits == 512 or "avx_vnni" in self.flags
        if vnni:
            return 2 * macs, f"VNNI on {FMA_PIPES}x{self.datapath_bits}-bit pipes"
        # without VNNI: vpmaddubsw + vpmaddwd (+ add) do the same MACs in about twice the instructions
        return macs, f"u8 x s8 madd pairs on {FMA_PIPES}x{self.datapath_bits}-bit pipes (no VNNI)"

    @property
    def bf16_flops_per_cycle(self) -> tuple[int, str]:
        """Per core: AMX-BF16 tiles, AVX-512 BF16 dot products (2 per fp32 lane), else fp32's rate (emulated)."""
        if {"amx_tile", "amx_bf16"} <= self.flags:
            return 2 * 512, "AMX-BF16 tiles (512 MAC/cycle)"
        if "avx512_bf16" in self.flags:
            return 2 * self.fp32_flops_per_cycle, f"AVX-512 BF16 on {FMA_PIPES}x{self.datapath_bits}-bit pipes"
        return self.fp32_flops_per_cycle, "no bf16 unit: fp32's rate"

    def peak(self, precision: str = "fp32", cores: int | None = None) -> Peak:
        """The peak rate of ``cores`` (default: this process's) at ``clock_mhz``."""
        n = cores or self.affinity
        if precision == "fp32":
            per, unit = self.fp32_flops_per_cycle, (f"{'FMA' if self.fma else 'mul+add'} on "
                                                   f"{FMA_PIPES}x{self.datapath_bits}-bit pipes")
        elif precision == "int8":
            per, unit = self.int8_ops_per_cycle
        elif precision == "bf16":
            per, unit = self.bf16_flops_per_cycle
        else:
            raise ValueError(f"unknown precision {precision!r} (expected fp32, int8 or bf16)")
        what = "OP" if precision == "int8" else "FLOP"
        return Peak(precision, n * self.clock_mhz * 1e6 * per, per, unit,
                    f"{n} cores x {self.clock_note} x {per} {precision} {what}/cycle ({unit})")

    def peak_flops(self, cores: int | None = None) -> tuple[float, str]:
        """fp32 FLOP/s of ``cores`` (default: this process's) at ``clock_mhz``, and how it was reckoned."""
        p = self.peak("fp32", cores)
        return p.ops_per_s, p.how

    @property
    def label(self) -> str:
        """The label every quoted number carries: ``AMD EPYC, 2 cores (AVX2)``."""
        widest = next((n for n in ("AVX-512", "AVX2", "AVX", "SSE4.2") if n in self.isa), None)
        extra = [n for n in ("AMX", "AVX-512 VNNI", "AVX-VNNI") if n in self.isa]
        isa = ", ".join([*extra, widest] if widest else extra)
        pin = f"; pinned to {self.pinned}" if self.pinned else ""
        return f"{self.cpu}, {self.affinity} cores" + (f" ({isa}{pin})" if isa or pin else "")

    def facts(self) -> MachineFacts:
        """What a bench JSON records about the machine (vendor, family, ISA, datapath, peaks, caches)."""
        return MachineFacts(self.vendor, self.family, self.model, self.mhz, self.vector_bits, self.datapath_bits,
                            list(self.caches), {p: self.peak(p) for p in PRECISIONS}, self.pinned, self.measured_mhz)

    def pinned_to(self, isa: str) -> Hardware:
        """These facts as a CPU limited to ``isa`` would show them."""
        if isa not in PINS:
            raise XferError(f"{ISA_VAR}={isa}: unknown ISA (expected one of: {', '.join(PINS)})")
        if isa == "avx512" and "avx512f" not in self.flags:
            raise XferError(f"{ISA_VAR}={isa}: this CPU ({self.cpu}) has no AVX-512")
        if isa == "avx2" and "avx2" not in self.flags:
            raise XferError(f"{ISA_VAR}={isa}: this CPU ({self.cpu}) has no AVX2")
        return replace(self, flags=self.flags - PINS[isa], pinned=isa)


def parse_cpuinfo(text: str) -> tuple[str, float, frozenset[str]]:
    """(model name, MHz, flags) of the first processor in a ``/proc/cpuinfo`` text; empty values where absent."""
    fields = cpuinfo_fields(text)
    try:
        mhz = float(fields.get("cpu MHz", "0"))
    except ValueError:
        mhz = 0.0
    return fields.get("model name", ""), mhz, frozenset(fields.get("flags", "").split())


def cpuinfo_fields(text: str) -> dict[str, str]:
    """The first processor's ``key: value`` lines of a ``/proc/cpuinfo`` text."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key and key not in out:
            out[key] = value.strip()
    return out


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def read_caches(root: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> tuple[Cache, ...]:
    """CPU 0's caches from sysfs (``32K``, ``1024K``, ``32768K``); none where sysfs does not say."""
    out = []
    for d in sorted(root.glob("index*")):
        try:
            level, kind, size = ((d / f).read_text().strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        kib = _int(size[:-1]) * (1024 if size.endswith("M") else 1) if size[-1:] in "KM" else _int(size) // 1024
        out.append(Cache(_int(level), kind, kib))
    return tuple(out)


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@lru_cache(maxsize=1)
def hardware() -> Hardware:
    """This machine, read from ``/proc/cpuinfo`` and sysfs and its clock measured, once per process (narrowed by
    ``XFER_ISA`` if set)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    name, mhz, flags = parse_cpuinfo(text)
    f = cpuinfo_fields(text)
    hw = Hardware(name or platform.processor() or platform.machine(), platform.machine(), os.cpu_count() or 1,
                  _affinity(), mhz or DEFAULT_MHZ, flags, f.get("vendor_id", ""), _int(f.get("cpu family", "0")),
                  _int(f.get("model", "0")), read_caches(), measured_mhz=clock_mhz())
    pin = os.environ.get(ISA_VAR)
    return hw.pinned_to(pin) if pin else hw
