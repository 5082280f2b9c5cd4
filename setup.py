"""Metadata lives in setup.cfg. The one compiled piece, a fused Snake activation for CPU inference, is
optional: without a C compiler the build goes on and dacli computes Snake with torch operations."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("dacli._snake", ["dacli/_snake.c"], optional=True,
                             extra_compile_args=["-O3", "-fno-math-errno", "-pthread"])])
