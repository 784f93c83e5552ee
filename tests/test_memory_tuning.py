"""The CLI's allocator setting (imf_kg/training/memory.py): applied on glibc Linux, skipped when switched off."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHECK = "from imf_kg.training.memory import keep_freed_memory as k; print(k(), k())"


def _run(env_value: str | None) -> str:
    env = dict(os.environ)
    env.pop("IMF_KG_MALLOC_TUNING", None)
    if env_value is not None:
        env["IMF_KG_MALLOC_TUNING"] = env_value
    return subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_applied_once_on_linux_and_switched_off_by_the_environment():
    try:
        glibc = (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError):
        glibc = False
    expected = "True True" if glibc else "False False"
    assert _run(None) == expected
    assert _run("0") == "False False"
