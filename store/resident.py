"""Keep the process's resident memory to what it uses (Linux with glibc; elsewhere a no-op).

chDB is a 550 MB library: starting it maps ~200 MB of its code, most of which never runs again,
and each page the kernel maps brings its neighbours (fault-around), so what is resident grows
with every rare path taken. glibc, left to itself, keeps freed request bodies in per-thread
heaps.
"""

from __future__ import annotations

import ctypes
import functools
import re
import sys

_MADV_DONTNEED = 4
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$")
_LIBRARY = re.compile(r"\.so(\.[0-9.]+)?$")


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc, or None (another OS, or another C library such as musl)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "mallopt"):  # not glibc (musl)
        return None
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc


def bound_heap(arenas: int = 2, mmap_bytes: int = 256 * 1024) -> None:
    """glibc: at most `arenas` heaps, and blocks of `mmap_bytes` or more (request bodies)
    mapped on their own, so that freeing one gives it back. Call before threads start."""
    libc = _libc()
    if libc is None:
        return
    libc.mallopt(_M_ARENA_MAX, arenas)
    libc.mallopt(_M_MMAP_THRESHOLD, mmap_bytes)  # fixed: glibc would raise it to 32 MiB
    libc.mallopt(_M_TRIM_THRESHOLD, 2 * mmap_bytes)


def trim_heap() -> None:
    """Return the free pages of glibc's heaps to the system."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def drop_code_pages() -> int:
    """Unmap the resident pages of shared libraries' code and constants; the kernel maps each
    again from the page cache (a minor fault) when it next runs. Returns the bytes unmapped.

    The collector calls it after each batch it stores: what the next batch runs comes back, what
    ran once (start-up, a rare query, a merge) does not stay resident for good.
    """
    libc = _libc()
    if libc is None:
        return 0
    dropped = 0
    for start, end, resident in _clean_library_mappings():
        if libc.madvise(start, end - start, _MADV_DONTNEED) == 0:
            dropped += resident
    return dropped


def _clean_library_mappings() -> list[tuple[int, int, int]]:
    """(start, end, resident bytes) of read-only library mappings that hold no private page.

    A private page (relocations, in a mapping made read-only after) exists nowhere else:
    unmapping it would lose it, so such mappings are skipped.
    """
    found = []
    current: tuple[int, int] | None = None
    resident = 0
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            header = _HEADER.match(line)
            if header:
                start, end, perms, path = header.groups()
                library = perms[1] == "-" and _LIBRARY.search(path) is not None
                current = (int(start, 16), int(end, 16)) if library else None
            elif current is not None and line.startswith("Rss:"):
                resident = int(line.split()[1]) * 1024
            elif current is not None and line.startswith("Anonymous:"):
                if int(line.split()[1]) == 0:
                    found.append((*current, resident))
                current = None
    return found
