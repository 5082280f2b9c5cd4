"""Metadata lives in setup.cfg. Two things need code:

- The one compiled piece, a fused Snake activation for CPU inference, is optional: without a C
  compiler the build goes on and dacli computes Snake with torch operations.
- The bundled model lives at the top of the repository (``weights/``); a wheel or a regular install
  carries it inside the package as ``dacli/weights/`` (the weights and their model card, not the
  training state), so the default model works wherever dacli is installed. Editable installs use
  ``weights/`` in place.
"""
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
BUNDLED = sorted(p.name for p in (HERE / "weights").glob("*.pth")) + ["README.md", "VERSIONS.json"]


class BuildWithWeights(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "dacli" / "weights"
        self.mkpath(str(target))
        for name in BUNDLED:
            self.copy_file(str(HERE / "weights" / name), str(target / name))


class BuildSnake(build_ext):
    """The Snake kernel with OpenMP (it then shares torch's OpenMP threads); where the compiler has no
    OpenMP, again without it (the kernel then starts threads of its own)."""

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception:  # CompileError, LinkError: retried without -fopenmp
            ext.extra_compile_args = [a for a in ext.extra_compile_args if a != "-fopenmp"] + ["-fopenmp-simd"]
            ext.extra_link_args = [a for a in ext.extra_link_args if a != "-fopenmp"]
            super().build_extension(ext)


setup(cmdclass={"build_py": BuildWithWeights, "build_ext": BuildSnake},
      ext_modules=[Extension("dacli._snake", ["dacli/_snake.c"], optional=True,
                             extra_compile_args=["-O3", "-fno-math-errno", "-fopenmp", "-pthread"],
                             extra_link_args=["-fopenmp"])])
