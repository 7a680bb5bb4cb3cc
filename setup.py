"""Ship the repository's example workspace inside the package.

`sequences/`, `templates/email/` and `newsletters/` at the repository root are the
single source of the example content; building a wheel copies them to `nurture/example/` so that
`nurture init DIR` works after a plain `pip install .`.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent


class BuildWithExample(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "nurture" / "example"
        for name in ("sequences", "templates", "newsletters"):
            shutil.rmtree(target / name, ignore_errors=True)
            shutil.copytree(ROOT / name, target / name)


setup(cmdclass={"build_py": BuildWithExample})
