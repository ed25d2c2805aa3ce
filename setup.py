"""Packaging that pyproject.toml cannot express: the Hydra configs, kept at the top of the repository (conf/)
for editing, ship inside the installed package as runner/conf (runner/paths.py finds either)."""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["runner", "runner.*"]) + ["runner.conf"],
    package_dir={"runner.conf": "conf"},
    package_data={"runner.conf": ["**/*.yaml"],
                  "runner": ["**/*.yaml", "**/*.yml", "**/*.json", "**/*.jsonl", "**/*.txt"]},
)
