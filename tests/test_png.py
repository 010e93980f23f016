"""adtutor.png: the encoder behind the built-in dataset's files; any decoder reads back exactly the pixels written."""
import io, zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from adtutor.png import encode_png

shapes = st.one_of(st.tuples(st.integers(1, 40), st.integers(1, 40)),
                   st.tuples(st.integers(1, 40), st.integers(1, 40), st.just(3)))


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint8, shapes))
def test_round_trip_through_pil(a):
    data = encode_png(a)
    back = Image.open(io.BytesIO(data))
    assert back.mode == ('L' if a.ndim == 2 else 'RGB') and back.size == (a.shape[1], a.shape[0])
    assert np.array_equal(np.asarray(back), a)
    assert encode_png(np.asfortranarray(a)) == data  # bytes depend on the pixels only, not on the memory layout


def test_layout_and_levels():
    a = np.arange(2 * 5 * 3, dtype=np.uint8).reshape(2, 5, 3)
    data = encode_png(a)
    assert data[:8] == b'\x89PNG\r\n\x1a\n' and data[12:16] == b'IHDR' and data[-8:-4] == b'IEND'
    assert int.from_bytes(data[16:20], 'big') == 5 and int.from_bytes(data[20:24], 'big') == 2 and data[24:26] == bytes([8, 2])
    fast, small = encode_png(a, level=1), encode_png(a, level=9)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(small))), a)
    idat = lambda d: d[33 + 8:33 + 8 + int.from_bytes(d[33:37], 'big')]
    assert zlib.decompress(idat(fast)) == zlib.decompress(idat(small))  # the level changes only the compression


@pytest.mark.parametrize('bad', [np.zeros((4, 4), np.float32), np.zeros((4, 4, 4), np.uint8), np.zeros(4, np.uint8),
                                 np.zeros((4, 4, 1), np.uint8)])
def test_refuses_what_it_cannot_write(bad):
    with pytest.raises(ValueError, match=r'uint8 \[H, W\] or \[H, W, 3\]'): encode_png(bad)
