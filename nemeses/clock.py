"""Clock faults: skew or strobe one node's wall clock with libfaketime.

A node that can take the fault starts with the environment `NodeClock.
environment()` returns: libfaketime preloaded, reading its offset from a file
of its own at (nearly) every call, so the harness changes the node's time
while it runs by rewriting that file. Only CLOCK_REALTIME moves
(FAKETIME_DONT_FAKE_MONOTONIC=1): on a real machine NTP steps the wall clock,
never the monotonic one, and a broker must time its leases with the latter.

libfaketime works through the dynamic loader and libc, so a binary that
bypasses either cannot be faked, and the fault is refused with the reason
(`unsupported_reason`): a statically linked executable (no PT_INTERP: the
loader never runs, LD_PRELOAD is ignored) and a Go binary (its runtime reads
the clock through the vDSO, never through libc). Scripts are judged by their
interpreter (`#!`).
"""
from __future__ import annotations

import glob
import os
import shutil
import struct
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

LIB_ENV = "HIGHWATER_LIBFAKETIME"
_LIB_GLOBS = ("/usr/lib/*/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1",
              "/usr/local/lib/faketime/libfaketime.so.1", "/usr/lib64/faketime/libfaketime.so.1",
              "/usr/local/lib/libfaketime.so.1")

PT_DYNAMIC, PT_INTERP = 2, 3
_GO_SECTIONS = {".go.buildinfo", ".note.go.buildid", ".gopclntab"}


class ClockUnsupported(RuntimeError):
    """libfaketime cannot change this target's clock; the message says why."""


def find_libfaketime() -> str:
    """The path of libfaketime.so.1 (or $HIGHWATER_LIBFAKETIME)."""
    explicit = os.environ.get(LIB_ENV)
    if explicit:
        if not os.path.isfile(explicit):
            raise ClockUnsupported(f"{LIB_ENV}={explicit} is not a file")
        return explicit
    for pattern in _LIB_GLOBS:
        for path in sorted(glob.glob(pattern)):
            return path
    raise ClockUnsupported("libfaketime.so.1 not found: install the Debian package `faketime` "
                           f"(or point {LIB_ENV} at the library)")


# --- can this binary be faked? ---------------------------------------------------------

@dataclass(frozen=True)
class ElfFacts:
    interp: bool        # has PT_INTERP: the dynamic loader runs (and honours LD_PRELOAD)
    dynamic: bool       # has PT_DYNAMIC
    go: bool            # built by Go (its runtime reads time via the vDSO)


def elf_facts(path: str) -> ElfFacts:
    """Program headers and section names of an ELF file; raises ValueError if
    it is not ELF."""
    with open(path, "rb") as f:
        ident = f.read(16)
        if len(ident) < 16 or ident[:4] != b"\x7fELF":
            raise ValueError(f"{path} is not an ELF file")
        bits = {1: 32, 2: 64}.get(ident[4])
        order = {1: "<", 2: ">"}.get(ident[5])
        if bits is None or order is None:
            raise ValueError(f"{path}: unknown ELF class or byte order")
        if bits == 64:
            hdr = struct.Struct(order + "HHIQQQIHHHHHH")
        else:
            hdr = struct.Struct(order + "HHIIIIIHHHHHH")
        (_, _, _, _, phoff, shoff, _, _, phentsize, phnum, shentsize, shnum, shstrndx) = \
            hdr.unpack(f.read(hdr.size))
        types = []
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            types.append(struct.unpack(order + "I", f.read(4))[0])
        return ElfFacts(PT_INTERP in types, PT_DYNAMIC in types,
                        bool(_GO_SECTIONS & _section_names(f, order, bits, shoff, shentsize, shnum, shstrndx)))


def _section_names(f, order, bits, shoff, shentsize, shnum, shstrndx) -> set[str]:
    if not shoff or not shnum or shstrndx >= shnum:
        return set()
    sh = struct.Struct(order + ("IIQQQQIIQQ" if bits == 64 else "IIIIIIIIII"))

    def section(i):
        f.seek(shoff + i * shentsize)
        return sh.unpack(f.read(sh.size))

    strtab = section(shstrndx)
    f.seek(strtab[4])
    names = f.read(min(strtab[5], 1 << 20))
    out = set()
    for i in range(shnum):
        start = section(i)[0]
        end = names.find(b"\0", start)
        out.add(names[start:end if end >= 0 else None].decode("latin-1"))
    return out


def unsupported_reason(program: str, _depth: int = 0) -> str | None:
    """None if libfaketime can change the clock of `program` (a path or a name
    on PATH), else why not."""
    path = program if os.sep in program else shutil.which(program)
    if path is None or not os.path.isfile(path):
        return f"{program}: not found"
    path = os.path.realpath(path)
    try:
        with open(path, "rb") as f:
            start = f.read(256)
    except OSError as e:
        return f"{path}: cannot read ({e})"
    if start.startswith(b"#!"):
        if _depth >= 4:
            return f"{path}: too many #! interpreters in a row"
        words = start[2:].split(b"\n", 1)[0].decode("latin-1").split()
        if not words:
            return f"{path}: empty #! line"
        interpreter = words[1] if os.path.basename(words[0]) == "env" and len(words) > 1 else words[0]
        why = unsupported_reason(interpreter, _depth + 1)
        return f"{path} runs under {interpreter}: {why}" if why else None
    try:
        facts = elf_facts(path)
    except ValueError as e:
        return f"{e}: libfaketime needs a dynamically linked executable"
    if not facts.interp:
        return (f"{path} is statically linked (no PT_INTERP{'' if facts.dynamic else ', no dynamic section'}): "
                "the dynamic loader never runs, so libfaketime (LD_PRELOAD) is never loaded")
    if facts.go:
        return (f"{path} is a Go binary: its runtime reads the clock through the vDSO, not libc, "
                "so libfaketime cannot change it")
    return None


def check_fakeable(program: str) -> None:
    why = unsupported_reason(program)
    if why:
        raise ClockUnsupported(why)


# --- one node's clock ---------------------------------------------------------------

def faketime_environment(timestamp_file: str | os.PathLike, *, cache_seconds: int = 1,
                         library: str | None = None, inherited: dict | None = None) -> dict[str, str]:
    """The variables a node's process needs (nemeses.faketime.preload_env,
    keeping any LD_PRELOAD the node already has)."""
    from nemeses.faketime import preload_env
    library = library or find_libfaketime()
    inherited = os.environ if inherited is None else inherited
    env = preload_env(library, str(timestamp_file), cache_seconds=cache_seconds)
    env["LD_PRELOAD"] = " ".join(p for p in (library, inherited.get("LD_PRELOAD", "")) if p)
    return env


class NodeClock:
    """The clock control of one node (`target.clock(node)`): its offset file,
    the environment its process starts with, and run-time changes."""

    def __init__(self, timestamp_file: str | os.PathLike, *, cache_seconds: int = 1):
        self.path = Path(timestamp_file)
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._offset = 0.0
        self._strobe: threading.Thread | None = None
        self._strobe_stop = threading.Event()
        self._write(0.0)

    def environment(self, inherited: dict | None = None) -> dict[str, str]:
        """The variables to add to the node's environment at start."""
        return faketime_environment(self.path, cache_seconds=self.cache_seconds, inherited=inherited)

    @property
    def offset(self) -> float:
        return self._offset

    def set_offset(self, seconds: float) -> None:
        """Skew the node's wall clock by `seconds` (negative: behind), now.
        Stops a strobe."""
        self._stop_strobe()
        self._write(seconds)

    def strobe(self, first: float, second: float, interval: float) -> None:
        """Alternate the offset between `first` and `second` every `interval`
        seconds until `set_offset` or `reset`."""
        if interval <= 0:
            raise ValueError(f"strobe interval must be > 0, got {interval}")
        if self.cache_seconds and interval < self.cache_seconds:
            raise ValueError(f"strobe interval {interval}s is shorter than the node's faketime cache "
                             f"({self.cache_seconds}s): the node would not see every jump")
        self._stop_strobe()
        self._strobe_stop = stop = threading.Event()

        def run():
            offsets = (first, second)
            i = 0
            while True:
                self._write(offsets[i % 2])
                i += 1
                if stop.wait(interval):
                    return

        self._strobe = threading.Thread(target=run, name=f"clock-strobe {self.path.name}", daemon=True)
        self._strobe.start()

    def reset(self) -> None:
        """The true time again (offset 0, no strobe)."""
        self.set_offset(0.0)

    def close(self) -> None:
        self._stop_strobe()

    def _stop_strobe(self) -> None:
        thread, self._strobe = self._strobe, None
        if thread is not None:
            self._strobe_stop.set()
            thread.join()

    def _write(self, seconds: float) -> None:
        # Written whole and renamed into place: libfaketime reopens the file
        # by name and must never read half an offset.
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            with os.fdopen(fd, "w") as f:
                f.write(f"{seconds:+.6f}\n")
            os.replace(tmp, self.path)
            self._offset = float(seconds)
