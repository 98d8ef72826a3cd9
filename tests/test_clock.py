"""Clock faults with libfaketime, observed from outside: a process started with
a node's environment reads the skewed wall clock, its monotonic clock is the
machine's, and the offset changes while it runs. Binaries libfaketime cannot
reach are refused with the reason."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import time

import pytest

from nemeses.clock import (ClockUnsupported, ElfFacts, NodeClock, check_fakeable, elf_facts, find_libfaketime,
                           unsupported_reason)

pytestmark = pytest.mark.timeout(60)

try:
    find_libfaketime()
    HAVE_FAKETIME = None
except ClockUnsupported as e:
    HAVE_FAKETIME = str(e)
needs_faketime = pytest.mark.skipif(HAVE_FAKETIME is not None, reason=HAVE_FAKETIME or "")

PROBE = ("import sys, time\n"
         "for line in sys.stdin:\n"
         "    print(time.time(), time.monotonic(), flush=True)\n")


class Probe:
    """A Python process under the node's environment that reports its clocks on demand."""

    def __init__(self, clock: NodeClock):
        self.proc = subprocess.Popen([sys.executable, "-c", PROBE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, **clock.environment()})

    def read(self) -> tuple[float, float, float, float]:
        """(its wall clock - ours, its monotonic - ours) around one question."""
        before_wall, before_mono = time.time(), time.monotonic()
        self.proc.stdin.write("?\n")
        self.proc.stdin.flush()
        wall, mono = map(float, self.proc.stdout.readline().split())
        after_wall, after_mono = time.time(), time.monotonic()
        return wall - before_wall, wall - after_wall, mono - before_mono, mono - after_mono

    def offset(self) -> float:
        lo_skew, hi_skew, _, _ = self.read()
        return (lo_skew + hi_skew) / 2

    def settles_at(self, target: float, timeout: float = 5.0) -> bool:
        """Whether its offset reaches `target` (the node re-reads its offset
        file at most once a second, so a change shows within ~1 s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if abs(self.offset() - target) < 0.5:
                return True
            time.sleep(0.05)
        return False

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(10)


@pytest.fixture
def clock(tmp_path):
    c = NodeClock(tmp_path / "n1.faketime")
    yield c
    c.close()


@needs_faketime
def test_skewed_process_reads_the_skewed_time_and_true_monotonic(clock):
    clock.set_offset(3600)
    probe = Probe(clock)
    try:
        after, before, mono_lo, mono_hi = probe.read()
        assert 3599 < before <= after < 3601          # the wall clock is an hour ahead
        assert mono_hi <= 0 <= mono_lo                # monotonic is the machine's own
    finally:
        probe.close()


@needs_faketime
def test_offset_changes_while_the_process_runs(clock):
    probe = Probe(clock)
    try:
        assert abs(probe.offset()) < 0.5
        clock.set_offset(-120.5)
        assert probe.settles_at(-120.5)
        clock.set_offset(7)
        assert probe.settles_at(7)
        *_, mono_lo, mono_hi = probe.read()
        assert abs(mono_lo) < 0.5                       # no jump in monotonic time
        clock.reset()
        assert probe.settles_at(0) and clock.offset == 0
    finally:
        probe.close()


@needs_faketime
def test_strobe_alternates_between_two_offsets(clock):
    probe = Probe(clock)
    try:
        clock.strobe(0, 50, interval=1.2)   # at least the node's re-read period (1 s)
        seen, monos = set(), []
        deadline = time.monotonic() + 15
        while len(seen) < 2 and time.monotonic() < deadline:
            seen.add(round(probe.offset() / 50))
            monos.append(probe.read()[2])
            time.sleep(0.03)
        assert seen == {0, 1}
        clock.set_offset(-5)                             # stops the strobe
        assert probe.settles_at(-5)
        assert all(abs(m) < 0.5 for m in monos)
    finally:
        probe.close()


def test_environment_preloads_libfaketime_and_keeps_monotonic(tmp_path):
    c = NodeClock(tmp_path / "x", cache_seconds=2)
    env = c.environment(inherited={"LD_PRELOAD": "/other.so"})
    assert env["LD_PRELOAD"].endswith(" /other.so") and "faketime" in env["LD_PRELOAD"]
    assert env["FAKETIME_DONT_FAKE_MONOTONIC"] == "1" and env["FAKETIME_CACHE_DURATION"] == "2"
    assert env["FAKETIME_TIMESTAMP_FILE"] == str(tmp_path / "x")
    with pytest.raises(ValueError):
        c.strobe(0, 10, interval=0.5)                 # faster than the node would notice
    assert (tmp_path / "x").read_text().strip() == "+0.000000"


# --- refusing what libfaketime cannot reach ------------------------------------------------

def test_a_static_binary_is_refused_with_the_reason():
    assert unsupported_reason(sys.executable) is None
    ldconfig = "/sbin/ldconfig"
    if not os.path.exists(ldconfig) or elf_facts(ldconfig).interp:
        pytest.skip("no statically linked ldconfig here")
    with pytest.raises(ClockUnsupported, match="statically linked.*LD_PRELOAD"):
        check_fakeable(ldconfig)


def test_the_static_go_s3_server_is_refused():
    import shutil
    weed = shutil.which("weed")
    if weed is None:
        pytest.skip("no weed binary")
    why = unsupported_reason(weed)
    assert why is not None and ("statically linked" in why or "Go binary" in why)


def make_elf(path, program_headers=(), sections=()):
    """A minimal 64-bit little-endian ELF with these program header types and section names."""
    ehsize, phentsize, shentsize = 64, 56, 64
    phoff = ehsize
    names = b"\0" + b"".join(n.encode() + b"\0" for n in (*sections, ".shstrtab"))
    strtab_off = phoff + phentsize * len(program_headers)
    shoff = strtab_off + len(names)
    all_sections = ["", *sections, ".shstrtab"]
    header = (b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
              + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0, phoff, shoff, 0, ehsize, phentsize,
                            len(program_headers), shentsize, len(all_sections), len(all_sections) - 1))
    phdrs = b"".join(struct.pack("<IIQQQQQQ", t, 0, 0, 0, 0, 0, 0, 0) for t in program_headers)
    shdrs = b""
    for name in all_sections:
        name_off = names.find(name.encode() + b"\0") if name else 0
        is_strtab = name == ".shstrtab"
        shdrs += struct.pack("<IIQQQQIIQQ", name_off, 3 if is_strtab else 1, 0, 0,
                             strtab_off if is_strtab else 0, len(names) if is_strtab else 0, 0, 0, 1, 0)
    path.write_bytes(header + phdrs + names + shdrs)
    path.chmod(0o755)
    return str(path)


def test_elf_program_headers_and_go_sections(tmp_path):
    dynamic = make_elf(tmp_path / "dyn", [6, 3, 1, 2], [".text", ".dynamic"])
    static = make_elf(tmp_path / "static", [1, 1], [".text"])
    static_pie = make_elf(tmp_path / "spie", [6, 1, 2], [".text"])
    go = make_elf(tmp_path / "go", [6, 3, 1, 2], [".text", ".note.go.buildid", ".go.buildinfo"])
    assert elf_facts(dynamic) == ElfFacts(interp=True, dynamic=True, go=False)
    assert unsupported_reason(dynamic) is None
    assert "no PT_INTERP, no dynamic section" in unsupported_reason(static)
    assert "no PT_INTERP)" in unsupported_reason(static_pie)
    assert elf_facts(go).go and "Go binary" in unsupported_reason(go)
    script = tmp_path / "run.sh"
    script.write_text(f"#!{static}\n")
    assert f"runs under {static}" in unsupported_reason(str(script))
    env_script = tmp_path / "py"
    env_script.write_text("#!/usr/bin/env python3\nprint(1)\n")
    assert unsupported_reason(str(env_script)) is None
    (tmp_path / "text").write_text("hello")
    assert "not an ELF" in unsupported_reason(str(tmp_path / "text"))
    assert "not found" in unsupported_reason(str(tmp_path / "missing"))
