"""The optional C extensions, built at install time with the machine's compiler: the parser
(pipeline/fetch/_fastlogs.c) and batch Keccak-256 (pipeline/_keccak.c); all other metadata is in
pyproject.toml. Without a working compiler the install still succeeds: pipeline.fetch.nativelogs
falls back to the numpy parser, pipeline.hashing to pycryptodome."""

from __future__ import annotations

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import BaseError, CCompilerError

# A compiler that is missing, broken or without Python's headers fails in one of these ways.
BUILD_ERRORS = (BaseError, CCompilerError, OSError)


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing: the extensions only make things faster."""

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
        f"warning: an optional C extension was not built ({exc}); Python stands in for it",
        file=sys.stderr,
    )


setup(
    ext_modules=[
        Extension(
            "pipeline.fetch._fastlogs",
            ["pipeline/fetch/_fastlogs.c"],
            optional=True,
        ),
        Extension("pipeline._keccak", ["pipeline/_keccak.c"], optional=True),
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
