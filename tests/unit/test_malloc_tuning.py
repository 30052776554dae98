"""`idp serve` and wsgi.py pin glibc's mmap threshold so argon2's blocks return to the OS."""

import platform

import pytest

from idp.server import release_large_blocks_to_the_os


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_the_threshold_is_accepted_on_glibc():
    assert release_large_blocks_to_the_os() is True
