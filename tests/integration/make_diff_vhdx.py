#!/usr/bin/env python3
"""Builds a differencing VHDX (MS-VHDX) over an existing VHDX parent, for tests: neither qemu nor
any Debian tool can make one. libvhdi is the independent reader that judges the result.

  make_diff_vhdx.py PARENT CHILD LOCATOR_PATH [OFFSET:LEN:BYTE ...]

Writes are 512-byte aligned. A write covering a whole block makes it FULLY PRESENT; otherwise
the block is PARTIALLY PRESENT and the chunk's sector bitmap marks the written sectors (bit n is
bit n % 8 of byte n / 8). The parent locator holds parent_linkage (the parent's data write GUID)
and LOCATOR_PATH as relative_path (or as absolute_win32_path when it is absolute).
"""
import struct
import sys
import uuid

K, M = 1024, 1 << 20


def crc32c(data):
    try:
        import crc32c as c  # noqa: F401  (optional, faster)
        return c.crc32c(data)
    except ImportError:
        pass
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
        table.append(c)
    c = 0xFFFFFFFF
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def g(s):
    return uuid.UUID(s).bytes_le


def parent_info(path):
    b = open(path, "rb").read(4 * M)
    heads = [(struct.unpack_from("<Q", b, h + 8)[0], h) for h in (64 * K, 128 * K) if b[h:h + 4] == b"head"]
    _, h = max(heads)
    data_write_guid = uuid.UUID(bytes_le=bytes(b[h + 32:h + 48]))
    rt = 192 * K
    meta = None
    for i in range(struct.unpack_from("<I", b, rt + 8)[0]):
        e = rt + 16 + i * 32
        if b[e:e + 16] == g("8B7CA206-4790-4B9A-B8FE-575F050F886E"):
            meta = struct.unpack_from("<Q", b, e + 16)[0]
    f = open(path, "rb")
    f.seek(meta)
    m = f.read(64 * K)
    size = lss = None
    for i in range(struct.unpack_from("<H", m, 10)[0]):
        e = 32 + i * 32
        off = struct.unpack_from("<I", m, e + 16)[0]
        f.seek(meta + off)
        item = f.read(8)
        if m[e:e + 16] == g("2FA54224-CD1B-4876-B211-5DBED83BF4B8"):
            size = struct.unpack_from("<Q", item)[0]
        if m[e:e + 16] == g("8141BF1D-A96F-4709-BA47-F233A8FAAB5F"):
            lss = struct.unpack_from("<I", item)[0]
    return data_write_guid, size, lss


def main(argv):
    parent, child, locator = argv[1], argv[2], argv[3]
    writes = []
    for w in argv[4:]:
        off, length, byte = (int(x, 0) for x in w.split(":"))
        assert off % 512 == 0 and length % 512 == 0
        writes.append((off, length, byte))
    pguid, size, lss = parent_info(parent)
    bs = 2 * M
    chunk_ratio = (1 << 23) * lss // bs
    blocks = -(-size // bs)
    chunks = -(-blocks // chunk_ratio)
    entries = chunks * (chunk_ratio + 1)
    LOG, META, BAT = 1 * M, 2 * M, 3 * M
    bat_len = -(-entries * 8 // M) * M
    next_free = BAT + bat_len

    # Decide block states and sector bitmaps.
    disk = {}  # block -> bytearray of the block's data
    present = {}  # block -> set of sectors (lss) written
    for off, length, byte in writes:
        for pos in range(off, off + length, 512):
            blk = pos // bs
            disk.setdefault(blk, bytearray(bs))[pos % bs:pos % bs + 512] = bytes([byte]) * 512
            present.setdefault(blk, set()).add((pos % bs) // lss)
    bat = [0] * entries  # NOT PRESENT everywhere
    out = {}  # file offset -> bytes
    bitmaps = {}  # chunk -> bytearray(1 MiB)
    for blk in sorted(disk):
        full = len(present[blk]) == bs // lss
        at = next_free
        next_free += bs
        out[at] = bytes(disk[blk])
        state = 6 if full else 7
        bat[blk + blk // chunk_ratio] = state | ((at // M) << 20)
        if not full:
            chunk = blk // chunk_ratio
            bm = bitmaps.setdefault(chunk, bytearray(M))
            base = (blk % chunk_ratio) * (bs // lss)
            for s in present[blk]:
                n = base + s
                bm[n // 8] |= 1 << (n % 8)
    for chunk, bm in bitmaps.items():
        at = next_free
        next_free += M
        out[at] = bytes(bm)
        bat[chunk * (chunk_ratio + 1) + chunk_ratio] = 6 | ((at // M) << 20)
    file_len = next_free
    img = bytearray(file_len)
    img[0:8] = b"vhdxfile"
    data_write = uuid.uuid4().bytes_le
    for seq, h in ((1, 64 * K), (2, 128 * K)):
        hd = bytearray(4 * K)
        hd[0:4] = b"head"
        struct.pack_into("<Q", hd, 8, seq)
        hd[16:32] = uuid.uuid4().bytes_le
        hd[32:48] = data_write
        struct.pack_into("<HHIQ", hd, 64, 0, 1, M, LOG)
        struct.pack_into("<I", hd, 4, crc32c(bytes(hd)))
        img[h:h + 4 * K] = hd
    rt = bytearray(64 * K)
    rt[0:4] = b"regi"
    struct.pack_into("<I", rt, 8, 2)
    rt[16:32] = g("2DC27766-F623-4200-9D64-115E9BFD4A08")
    struct.pack_into("<QII", rt, 32, BAT, bat_len, 1)
    rt[48:64] = g("8B7CA206-4790-4B9A-B8FE-575F050F886E")
    struct.pack_into("<QII", rt, 64, META, M, 1)
    struct.pack_into("<I", rt, 4, crc32c(bytes(rt)))
    img[192 * K:256 * K] = rt
    img[256 * K:320 * K] = rt
    # Parent locator item.
    kv = [("parent_linkage", "{%s}" % str(pguid).upper())]
    kv.append(("absolute_win32_path" if locator.startswith("/") else "relative_path", locator))
    loc = bytearray(g("B04AEFB7-D19E-4A81-B789-25B8E9445913")) + struct.pack("<HH", 0, len(kv))
    strings = bytearray()
    base = 20 + 12 * len(kv)
    entries_b = bytearray()
    for k, v in kv:
        kb, vb = k.encode("utf-16-le"), v.encode("utf-16-le")
        ko = base + len(strings)
        strings += kb
        vo = base + len(strings)
        strings += vb
        entries_b += struct.pack("<IIHH", ko, vo, len(kb), len(vb))
    loc += entries_b + strings
    items = [
        ("CAA16737-FA36-4D43-B3B6-33F0AA44E76B", struct.pack("<II", bs, 2), 4),
        ("2FA54224-CD1B-4876-B211-5DBED83BF4B8", struct.pack("<Q", size), 6),
        ("BECA12AB-B2E6-4523-93EF-C309E000C746", uuid.uuid4().bytes_le, 6),
        ("8141BF1D-A96F-4709-BA47-F233A8FAAB5F", struct.pack("<I", lss), 6),
        ("CDA348C7-445D-4471-9CC9-E9885251C556", struct.pack("<I", 4096), 6),
        ("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C", bytes(loc), 4),
    ]
    m = bytearray(M)
    m[0:8] = b"metadata"
    struct.pack_into("<H", m, 10, len(items))
    off = 64 * K
    for i, (gs, data, flags) in enumerate(items):
        e = 32 + i * 32
        m[e:e + 16] = g(gs)
        struct.pack_into("<III", m, e + 16, off, len(data), flags)
        m[off:off + len(data)] = data
        off += -(-len(data) // 8) * 8
    img[META:META + M] = m
    for i, e in enumerate(bat):
        struct.pack_into("<Q", img, BAT + i * 8, e)
    for at, data in out.items():
        img[at:at + len(data)] = data
    open(child, "wb").write(img)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
