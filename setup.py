"""Build hook (the rest of the metadata is in pyproject.toml): the wheel carries the shipped recipes and
the shipped model zoo as package data.

They live at the repository root (recipes/, model_zoo/), where the docs and scripts name them; building
copies them into the wheel under analogai_deploy/_shipped/, which `analogai_deploy._shipped` looks in
first. An editable install (make install) reads them from the repository root.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ("recipes", "model_zoo")


class BuildPy(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads the source tree's folders
            return
        target = Path(self.build_lib) / "analogai_deploy" / "_shipped"
        for name in SHIPPED:
            dest = target / name
            if dest.exists():
                shutil.rmtree(dest)
            shutil.copytree(ROOT / name, dest, ignore=shutil.ignore_patterns(".*", "__pycache__"))


setup(cmdclass={"build_py": BuildPy})
