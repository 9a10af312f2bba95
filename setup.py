"""What pyproject.toml cannot say: the top-level migrations/ and gunicorn.conf.py ship inside
the authsvc package, where `authsvc migrate` and `authsvc serve` find them once installed;
the mail templates ship as the package's data."""

from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildPyWithGunicornConfig(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "authsvc" / "gunicorn.conf.py"
        self.copy_file("gunicorn.conf.py", str(target))


setup(
    packages=[
        *find_packages(include=["authsvc", "authsvc.*"]),
        "authsvc.migrations",
        "authsvc.migrations.versions",
    ],
    package_dir={"authsvc.migrations": "migrations"},
    package_data={"authsvc": ["templates/mail/*"], "authsvc.migrations": ["script.py.mako"]},
    cmdclass={"build_py": BuildPyWithGunicornConfig},
)
