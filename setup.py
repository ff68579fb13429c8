"""Maps the top-level source folders onto one import root: models/ -> zoo.models, kernels/ -> zoo.kernels,
datasets/ -> zoo.datasets (a top-level `datasets` package would shadow Hugging Face's)."""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
MAPPED = {"zoo.models": "models", "zoo.kernels": "kernels", "zoo.datasets": "datasets"}

packages = ["zoo"] + [f"zoo.{p}" for p in find_packages("zoo")]
package_dir = {"zoo": "zoo"}
for name, folder in MAPPED.items():
    packages.append(name)
    package_dir[name] = folder
    for sub in find_packages(folder):
        packages.append(f"{name}.{sub}")
        package_dir[f"{name}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"

setup(packages=packages, package_dir=package_dir, package_data={"zoo": ["py.typed"]})
