#!/usr/bin/python3
"""libvhdi (pyvhdi) as an independent VHD reader, for oracle tests.

Debian packages libvhdi-utils without `vhdiexport`; this script fills that gap with the same
library through its Python binding (Debian package python3-libvhdi).

  vhdiexport.py info IMAGE                      JSON: media_size, disk_type, identifier
  vhdiexport.py export IMAGE OUTPUT             the virtual disk as a sparse raw file
  vhdiexport.py sha256 IMAGE OFFSET:LEN ...     SHA-256 of each range, one per line

A differencing VHD needs its parents: add --parent=PATH once per level, nearest parent first.
"""
import hashlib
import json
import sys

import pyvhdi

CHUNK = 1 << 20


KEEP = []  # pyvhdi's set_parent holds no reference: keep the parents alive ourselves


def open_image(path, parents=()):
    f = pyvhdi.file()
    f.open(path)
    child = f
    for p in parents:
        parent = pyvhdi.file()
        parent.open(p)
        child.set_parent(parent)
        KEEP.append(parent)
        child = parent
    return f


def main(argv):
    parents = [a.split("=", 1)[1] for a in argv if a.startswith("--parent=")]
    argv = [a for a in argv if not a.startswith("--parent=")]
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, path = argv[1], argv[2]
    f = open_image(path, parents)
    size = f.get_media_size()
    if cmd == "info":
        print(json.dumps({
            "media_size": size,
            "disk_type": f.get_disk_type(),
            "identifier": str(f.get_identifier()),
        }))
    elif cmd == "export":
        with open(argv[3], "wb") as out:
            out.truncate(size)
            off = 0
            zero = bytes(CHUNK)
            while off < size:
                n = min(CHUNK, size - off)
                data = f.read_buffer_at_offset(n, off)
                if len(data) != n:
                    raise SystemExit(f"short read at {off}: {len(data)} of {n}")
                if data != zero[:n]:
                    out.seek(off)
                    out.write(data)
                off += n
    elif cmd == "sha256":
        for spec in argv[3:]:
            off, n = (int(x) for x in spec.split(":"))
            h = hashlib.sha256()
            while n > 0:
                k = min(CHUNK, n)
                data = f.read_buffer_at_offset(k, off)
                if len(data) != k:
                    raise SystemExit(f"short read at {off}: {len(data)} of {k}")
                h.update(data)
                off += k
                n -= k
            print(h.hexdigest())
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
