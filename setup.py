"""Maps the code folders under one import root: engine/ -> tunesmith.engine, ...

The folders stay where DESIGN.md puts them while nothing installs a top-level
module called `engine` or `kernels` (Hugging Face ships a `kernels` package
that transformers looks for; a clash would break users' environments).
Everything else lives in pyproject.toml.
"""
from setuptools import find_packages, setup

FOLDERS = ["engine", "studio", "kernels", "cli", "data", "assets"]

packages = ["tunesmith"]
package_dir = {"tunesmith": "tunesmith"}
for folder in FOLDERS:
    packages.append(f"tunesmith.{folder}")
    package_dir[f"tunesmith.{folder}"] = folder
    for sub in find_packages(folder):
        packages.append(f"tunesmith.{folder}.{sub}")

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={
        "tunesmith.data": ["*.json", "*.jsonl", "*.txt", "*.csv"],
        "tunesmith.assets": ["*.css", "*.png", "*.svg", "*.yaml", "demo-model/*"],
    },
    include_package_data=True,
)
