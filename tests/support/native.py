"""Small shared libraries built with the machine's own compiler, for tests of what a loader makes of them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PLAIN_SOURCE = 'extern "C" int one(void) { return 1; }\n'
# Quick to build, and it needs the C++ runtime (operator new).
STRING_SOURCE = '#include <string>\nextern "C" int length(const char* s) { return (int)std::string(s).size(); }\n'
# What an AOTInductor library does first when torch starts it: parse its device string with std::regex.
REGEX_SOURCE = """#include <regex>
#include <string>
extern "C" int parse_device(const char* s) {
  std::smatch m;
  std::string text(s);
  return std::regex_match(text, m, std::regex("^(cuda|cpu)(:([0-9]+))?$")) ? 1 : 0;
}
"""


def build_library(folder: Path, name: str, source: str, *flags: str) -> Path:
    """``lib<name>.so`` from the C++ ``source``; skips the test where there is no ``g++``."""
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    path = folder / f"{name}.cpp"
    path.write_text(source)
    library = folder / f"lib{name}.so"
    subprocess.run([compiler, "-shared", "-fPIC", *flags, "-o", str(library), str(path)], check=True)
    return library
