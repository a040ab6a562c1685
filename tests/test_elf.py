"""The ELF checks run on an ahead-of-time library before it is loaded: its stack flag and its C++ runtime."""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import pytest

from lorallama.serving import elf
from support.native import PLAIN_SOURCE, REGEX_SOURCE, STRING_SOURCE, build_library


def test_a_library_that_asks_for_an_executable_stack_loses_the_flag_and_still_loads(tmp_path):
    """Newer glibc refuses to dlopen such a library; ``spaces.aoti_compile`` clears the flag, and so do we."""
    if shutil.which("readelf") is None:
        pytest.skip("no readelf")
    library = build_library(tmp_path, "one", PLAIN_SOURCE, "-z", "execstack")

    def executable_stack() -> bool:
        out = subprocess.run(["readelf", "-lW", str(library)], capture_output=True, text=True, check=True).stdout
        return "RWE" in next(ln for ln in out.splitlines() if "GNU_STACK" in ln)

    assert executable_stack()
    assert elf.clear_executable_stack(str(library)) is True
    assert not executable_stack()
    assert elf.clear_executable_stack(str(library)) is False  # already clear: nothing written
    assert ctypes.CDLL(str(library)).one() == 1


def test_needed_libraries_are_what_readelf_reads(tmp_path):
    if shutil.which("readelf") is None:
        pytest.skip("no readelf")
    library = build_library(tmp_path, "dynamic", STRING_SOURCE)
    out = subprocess.run(["readelf", "-dW", str(library)], capture_output=True, text=True, check=True).stdout
    expected = [ln.split("[", 1)[1].rstrip("]") for ln in out.splitlines() if "(NEEDED)" in ln]
    assert elf.needed_libraries(str(library)) == expected
    assert any(name.startswith("libstdc++.so") for name in expected)


@pytest.fixture(scope="module")
def regex_libraries(tmp_path_factory) -> dict:
    """What an AOTInductor library does first, built twice: against the shared C++ runtime and with its own copy."""
    folder = tmp_path_factory.mktemp("regex-libraries")
    return {
        "shared": build_library(folder, "shared", REGEX_SOURCE),
        "own": build_library(folder, "own", REGEX_SOURCE, "-static-libstdc++", "-static-libgcc"),
    }


def test_a_library_with_its_own_copy_of_the_cxx_runtime_is_told_apart(regex_libraries):
    assert elf.carries_own_cxx_runtime(str(regex_libraries["shared"])) is False
    assert elf.carries_own_cxx_runtime(str(regex_libraries["own"])) is True
    assert not any(name.startswith("libstdc++") for name in elf.needed_libraries(str(regex_libraries["own"])))


def test_its_own_cxx_runtime_breaks_std_regex_once_torch_is_loaded(regex_libraries):
    """Why such a library is refused: the H200 host's loader crash (in AOTInductor's std::regex device parsing),
    reproduced without a GPU. The same code works alone, and linked against the shared runtime."""
    import subprocess
    import sys

    def parse(name: str, after_torch: bool) -> subprocess.CompletedProcess:
        code = f"import ctypes; print(ctypes.CDLL({str(regex_libraries[name])!r}).parse_device(b'cuda:0'))"
        command = [sys.executable, "-c", ("import torch; " if after_torch else "") + code]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    assert parse("own", after_torch=False).stdout.strip() == "1"
    assert parse("shared", after_torch=True).stdout.strip() == "1"
    broken = parse("own", after_torch=True)
    assert broken.returncode != 0, broken.stdout  # std::bad_cast with Debian's g++ 12, a segfault with Ubuntu's g++ 13


def test_files_that_are_not_elf_libraries(tmp_path):
    other = tmp_path / "notes.txt"
    other.write_bytes(b"not an ELF file")
    assert elf.clear_executable_stack(str(other)) is False
    assert elf.needed_libraries(str(other)) is None
    assert elf.carries_own_cxx_runtime(str(other)) is False
