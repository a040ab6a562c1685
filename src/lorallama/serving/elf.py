"""Reading and patching the ELF headers of the shared libraries AOTInductor builds, before they are loaded.

Two things decide whether such a library can be loaded into a serving process at all: whether it asks for an
executable stack (newer glibc refuses to ``dlopen`` it) and whether it links the shared C++ runtime that torch uses
(a library carrying its own copy of libstdc++ crashes inside ``std::regex`` as soon as it starts). Both are in the
headers, so they are checked here without loading anything.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

PT_LOAD, PT_DYNAMIC, PT_GNU_STACK = 1, 2, 0x6474E551
PF_X = 0x1
DT_NULL, DT_NEEDED, DT_STRTAB = 0, 1, 5
PROGRAM_HEADER = struct.Struct("<IIQQQQQQ")  # type, flags, offset, vaddr, paddr, filesz, memsz, align


def _program_headers(fh: BinaryIO) -> list[tuple[int, tuple]] | None:
    """(file position, fields) of each program header; None unless a 64-bit little-endian ELF file (what
    AOTInductor builds on x86-64 and arm64)."""
    header = fh.read(64)
    if header[:6] != b"\x7fELF\x02\x01":
        return None
    (offset,) = struct.unpack_from("<Q", header, 32)
    size, count = struct.unpack_from("<HH", header, 54)
    found = []
    for index in range(count):
        fh.seek(offset + index * size)
        found.append((offset + index * size, PROGRAM_HEADER.unpack(fh.read(PROGRAM_HEADER.size))))
    return found


def clear_executable_stack(path: str) -> bool:
    """Drop PF_X from the library's PT_GNU_STACK header, in place; True when it was set."""
    with open(path, "r+b") as fh:
        for position, (kind, flags, *_) in _program_headers(fh) or []:
            if kind == PT_GNU_STACK:
                if not flags & PF_X:
                    return False
                fh.seek(position + 4)
                fh.write(struct.pack("<I", flags & ~PF_X))
                return True
    return False


def needed_libraries(path: str) -> list[str] | None:
    """The library's DT_NEEDED entries (the shared libraries it links), in order; None unless an ELF64 file."""
    with open(path, "rb") as fh:
        headers = _program_headers(fh)
        if headers is None:
            return None
        loads = [fields for _, fields in headers if fields[0] == PT_LOAD]
        dynamic = next((fields for _, fields in headers if fields[0] == PT_DYNAMIC), None)
        if dynamic is None:
            return []  # linked statically
        fh.seek(dynamic[2])
        raw = fh.read(dynamic[5])
        entries = [struct.unpack_from("<qQ", raw, at) for at in range(0, len(raw) - 15, 16)]
        entries = entries[: next((i for i, (tag, _) in enumerate(entries) if tag == DT_NULL), len(entries))]
        strtab = next((value for tag, value in entries if tag == DT_STRTAB), None)
        if strtab is None:
            return []
        # DT_STRTAB is an address; the segment that maps it gives its place in the file.
        base = next(
            (off + strtab - vaddr for _, _, off, vaddr, _, size, *_ in loads if vaddr <= strtab < vaddr + size), None
        )
        if base is None:
            return []
        names = []
        for tag, value in entries:
            if tag == DT_NEEDED:
                fh.seek(base + value)
                names.append(fh.read(256).split(b"\0", 1)[0].decode("utf-8", "replace"))
        return names


def carries_own_cxx_runtime(path: str) -> bool:
    """True for a C++ library that does not link the shared libstdc++ (a compiler that links it statically)."""
    needed = needed_libraries(path)
    return needed is not None and not any(name.startswith("libstdc++.so") for name in needed)
