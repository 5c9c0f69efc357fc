"""Builds the optional C speedups (``logharbor._speedups``); all metadata is in pyproject.toml.

The extension is optional: without a C compiler the install still succeeds and
LogHarbor uses its pure-Python code paths (see ``logharbor/_native.py``).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "logharbor._speedups",
            ["src/logharbor/_speedups.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    ]
)
