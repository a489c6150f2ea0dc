#!/usr/bin/env python3
"""make_gz_fixtures.py OUTDIR - gzip fixtures of io.c's reader (rf_gunzip), made
with Python's standard library only (gzip, zlib, struct): an implementation
independent of the one under test.

Valid cases, each NAME.gz beside the original bytes NAME.txt:
  stored        zlib level 0: stored blocks (BTYPE 00)
  fixed         zlib with strategy Z_FIXED: fixed Huffman codes (BTYPE 01)
  dynamic       zlib level 9 of 36 KB of repetitive text: dynamic Huffman codes
                (BTYPE 10) and copies from up to 32 KB back
  multi         two members concatenated (RFC 1952 §2.2)
  empty         one member of no data
  fname         the gzip module's header with FNAME and MTIME
  extra         a header written by hand with FTEXT, FEXTRA, FNAME, FCOMMENT and
                FHCRC (the gzip module writes none of FEXTRA/FCOMMENT/FHCRC)
  padded        a member followed by zero bytes (allowed, as gzip(1) and
                Python's gzip module allow)
Corrupt cases, NAME.gz only; test_io.c names the error each must give:
  bad_magic, bad_method, bad_flags, bad_crc, bad_isize, bad_hcrc,
  truncated_data, truncated_trailer, truncated_header, bad_btype,
  bad_stored_len, too_far (a copy before the first byte), oversubscribed
  (a dynamic block whose code-length code has three codes of length 1),
  trailing_garbage (a member followed by bytes that are not a member).

Every valid file is checked to decompress to its original with gzip.decompress,
and every corrupt one to be refused by zlib (or by gzip for header faults), so
the fixtures do not depend on the C code.  The block type claimed for stored,
fixed and dynamic is checked from the first block header's bits.  The output is
deterministic (MTIME fixed).  Run: /usr/bin/python3 tests/reference/make_gz_fixtures.py tests/fixtures/gz
"""
import gzip
import os
import struct
import sys
import zlib

MTIME = 1_000_000_000


def raw_deflate(data, level=6, strategy=zlib.Z_DEFAULT_STRATEGY):
    """DEFLATE data without any wrapper (wbits -15)."""
    c = zlib.compressobj(level, zlib.DEFLATED, -15, 9, strategy)
    return c.compress(data) + c.flush()


def member(data, body=None, flags=0, header_extra=b"", xfl=0, os_byte=255):
    """One gzip member (RFC 1952 §2.3) built by hand around raw DEFLATE data."""
    if body is None:
        body = raw_deflate(data)
    head = struct.pack("<BBBBIBB", 0x1F, 0x8B, 8, flags, MTIME, xfl, os_byte) + header_extra
    return head + body + struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)


def first_btype(gz):
    """BTYPE of the first block of a member with a plain 10-byte header."""
    return (gz[10] >> 1) & 3


class Bits:
    """A DEFLATE bit writer: fields least significant bit first, Huffman codes
    most significant bit first (RFC 1951 §3.1.1)."""

    def __init__(self):
        self.bits = []

    def field(self, value, n):
        self.bits += [(value >> i) & 1 for i in range(n)]

    def code(self, value, n):
        self.bits += [(value >> (n - 1 - i)) & 1 for i in range(n)]

    def bytes(self):
        b = self.bits + [0] * (-len(self.bits) % 8)
        return bytes(sum(b[i + k] << k for k in range(8)) for i in range(0, len(b), 8))


def text(n_words, seed):
    """Deterministic text with repeats near and far (a linear congruential stream)."""
    words = ("gift card magazine subscription review product price brand title category also bought viewed "
             "together similar item user rating stars great value quality shipping fast recommend").split()
    x, out = seed, []
    for i in range(n_words):
        x = (1103515245 * x + 12345) % 2**31
        out.append(words[x % len(words)])
        if i % 17 == 16:
            out.append(".\n")
    return " ".join(out).encode()


def main(outdir):
    os.makedirs(outdir, exist_ok=True)
    valid, corrupt = {}, {}

    short = b"RecFound: generative representational learning of foundation models for recommendation.\n"
    valid["stored"] = (short * 3, member(short * 3, raw_deflate(short * 3, level=0)))
    valid["fixed"] = (short, member(short, raw_deflate(short, 9, zlib.Z_FIXED)))
    big = text(5000, 42)
    valid["dynamic"] = (big, member(big, raw_deflate(big, 9)))
    a, b = b"first member\n", b"second member, " * 20 + b"\n"
    valid["multi"] = (a + b, member(a) + member(b, raw_deflate(b, 9)))
    valid["empty"] = (b"", member(b""))
    buf = __import__("io").BytesIO()
    with gzip.GzipFile(filename="hello.txt", mode="wb", fileobj=buf, mtime=MTIME) as g:
        g.write(short)
    valid["fname"] = (short, buf.getvalue())
    # FTEXT | FHCRC | FEXTRA | FNAME | FCOMMENT, with a two-subfield extra field
    sub = b"RF" + struct.pack("<H", 3) + b"abc" + b"XY" + struct.pack("<H", 0)
    head = struct.pack("<BBBBIBB", 0x1F, 0x8B, 8, 1 | 2 | 4 | 8 | 16, MTIME, 2, 3)
    head += struct.pack("<H", len(sub)) + sub + b"name.txt\0" + b"a comment\0"
    head += struct.pack("<H", zlib.crc32(head) & 0xFFFF)
    body = raw_deflate(short)
    valid["extra"] = (short, head + body + struct.pack("<II", zlib.crc32(short), len(short)))
    valid["padded"] = (short, member(short) + b"\0" * 8)

    assert first_btype(valid["stored"][1]) == 0, "stored: first block is not stored"
    assert first_btype(valid["fixed"][1]) == 1, "fixed: first block is not fixed Huffman"
    assert first_btype(valid["dynamic"][1]) == 2, "dynamic: first block is not dynamic Huffman"

    good = member(short)
    corrupt["bad_magic"] = b"\x1f\x8c" + good[2:]
    corrupt["bad_method"] = good[:2] + b"\x07" + good[3:]
    corrupt["bad_flags"] = good[:3] + b"\x20" + good[4:]
    crc_at = len(good) - 8
    corrupt["bad_crc"] = good[:crc_at] + bytes([good[crc_at] ^ 0x01]) + good[crc_at + 1:]
    corrupt["bad_isize"] = good[:-4] + struct.pack("<I", len(short) + 1)
    corrupt["bad_hcrc"] = head[:-2] + bytes([head[-2] ^ 0xFF, head[-1]]) + body + struct.pack("<II", zlib.crc32(short), len(short))
    dyn = valid["dynamic"][1]
    corrupt["truncated_data"] = dyn[: len(dyn) // 2]
    corrupt["truncated_trailer"] = good[:-3]
    corrupt["truncated_header"] = good[:7]
    # BFINAL = 1, BTYPE = 11 (reserved)
    w = Bits()
    w.field(1, 1)
    w.field(3, 2)
    corrupt["bad_btype"] = member(b"", w.bytes())
    # a stored block whose NLEN is not the complement of LEN
    corrupt["bad_stored_len"] = member(b"abc", bytes([1]) + struct.pack("<HH", 3, 0x1234) + b"abc")
    # a fixed block that starts with a copy: length 3 (symbol 257, code 0000001), distance 1 (code 00000)
    w = Bits()
    w.field(1, 1)
    w.field(1, 2)
    w.code(0b0000001, 7)
    w.code(0, 5)
    w.code(0, 7)  # end of block (256)
    corrupt["too_far"] = member(b"", w.bytes())
    # a dynamic block: HLIT 257, HDIST 1, HCLEN 4 with code-length code lengths 1, 1, 1, 0 (over-subscribed)
    w = Bits()
    w.field(1, 1)
    w.field(2, 2)
    w.field(0, 5)
    w.field(0, 5)
    w.field(0, 4)
    for v in (1, 1, 1, 0):
        w.field(v, 3)
    corrupt["oversubscribed"] = member(b"", w.bytes() + b"\0" * 8)
    corrupt["trailing_garbage"] = good + b"garbage!"

    for name, (orig, gz) in valid.items():
        assert gzip.decompress(gz) == orig, f"{name}: gzip.decompress disagrees"
    for name, gz in corrupt.items():
        try:
            out = zlib.decompressobj(31)  # gzip wrapper, one member
            data = out.decompress(gz) + out.flush()
            if name in ("truncated_data", "truncated_trailer", "truncated_header", "too_far"):
                assert not out.eof, f"{name}: zlib reached the end of the stream"
            elif name in ("bad_isize", "bad_hcrc", "trailing_garbage", "bad_flags"):
                # zlib does not check ISIZE or a reserved flag before the data, nor look past a member:
                # Python's gzip module is the judge of these.
                try:
                    gzip.decompress(gz)
                    raise AssertionError(f"{name}: gzip.decompress accepted it")
                except (OSError, EOFError, zlib.error):
                    pass
            else:
                raise AssertionError(f"{name}: zlib accepted it ({len(data)} bytes)")
        except zlib.error:
            pass

    for name, (orig, gz) in valid.items():
        with open(os.path.join(outdir, name + ".txt"), "wb") as f:
            f.write(orig)
        with open(os.path.join(outdir, name + ".gz"), "wb") as f:
            f.write(gz)
    for name, gz in corrupt.items():
        with open(os.path.join(outdir, name + ".gz"), "wb") as f:
            f.write(gz)
    print(f"make_gz_fixtures.py: {len(valid)} valid and {len(corrupt)} corrupt gzip files in {outdir}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
