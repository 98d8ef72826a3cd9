"""The lazy file system's unsynced-data overlay against a plain bytearray
model: whatever writes, truncates and syncs happen, reads see the file as
written, the backing file holds exactly what was last synced, and a crash
(dropping the overlay) leaves the last synced contents."""
from __future__ import annotations

import os

from hypothesis import given, settings, strategies as st

from reference.volumes.fusefs import Overlay

ops = st.lists(st.one_of(
    st.tuples(st.just("write"), st.integers(0, 3000), st.binary(min_size=1, max_size=700)),
    st.tuples(st.just("truncate"), st.integers(0, 3500)),
    st.tuples(st.just("read"), st.integers(0, 3500), st.integers(0, 1500)),
    st.tuples(st.just("sync")),
), max_size=40)


@settings(max_examples=300, deadline=None)
@given(initial=st.binary(max_size=2000), ops=ops)
def test_overlay_matches_a_bytearray_model(tmp_path_factory, initial, ops):
    path = tmp_path_factory.mktemp("ov") / "f"
    path.write_bytes(initial)
    fd = os.open(path, os.O_RDWR)
    try:
        ov = Overlay(fd)
        model, durable = bytearray(initial), bytes(initial)
        for op in ops:
            if op[0] == "write":
                _, off, data = op
                if off > len(model):
                    model.extend(bytes(off - len(model)))
                model[off:off + len(data)] = data
                ov.write(off, data)
            elif op[0] == "truncate":
                n = op[1]
                del model[n:]
                model.extend(bytes(n - len(model)))
                ov.truncate(n)
            elif op[0] == "read":
                _, off, n = op
                assert ov.read(off, n) == bytes(model[off:off + n])
            else:
                ov.flush(datasync=True, real_sync=False)
                durable = bytes(model)
            assert ov.size == len(model)
            assert path.read_bytes() == durable            # the backing changes only on sync
            assert all(ov.starts[i] + len(ov.datas[i]) < ov.starts[i + 1] for i in range(len(ov.starts) - 1))
        assert ov.read(0, len(model) + 10) == bytes(model)
    finally:
        os.close(fd)
