"""The optional C parser (pipeline/fetch/_fastlogs.c), built at install time with the machine's
compiler; all other metadata is in pyproject.toml. Without a working compiler the install still
succeeds, and pipeline.fetch.nativelogs falls back to the numpy parser."""

from __future__ import annotations

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import BaseError, CCompilerError

# A compiler that is missing, broken or without Python's headers fails in one of these ways.
BUILD_ERRORS = (BaseError, CCompilerError, OSError)


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing: the C parser only makes parsing faster."""

    def run(self) -> None:
        try:
            super().run()
        except BUILD_ERRORS as exc:  # e.g. no compiler to set up at all
            _warn(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except BUILD_ERRORS as exc:
            _warn(exc)


def _warn(exc: BaseException) -> None:
    print(
        f"warning: the optional C parser was not built ({exc}); the numpy parser will be used",
        file=sys.stderr,
    )


setup(
    ext_modules=[
        Extension(
            "pipeline.fetch._fastlogs",
            ["pipeline/fetch/_fastlogs.c"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
