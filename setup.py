from setuptools import find_packages, setup

setup(
    name="recbole-srgnn",
    version="0.1.0",
    description="Session-based recommendation with SR-GNN (PyTorch Geometric) as a RecBole plugin",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9,<3.12",
    packages=find_packages(include=["recbole_srgnn", "recbole_srgnn.*"]),
    # the config layers (overall, model/, dataset/) and the search spaces (tune/)
    entry_points={"console_scripts": ["recbole-srgnn = recbole_srgnn.cli:main"]},
    package_data={"recbole_srgnn": ["properties/*.yaml", "properties/*/*.yaml"]},
    install_requires=[
        "torch>=2.2",
        "recbole==1.2.1",
        "torch-geometric>=2.5,<2.9",
        "numpy>=1.23,<2",  # RecBole 1.2.1 and Ray 2.6.3 use aliases removed in numpy 2
        "pandas>=1.5,<3",  # under pandas 3 RecBole's NaN filling silently does nothing
        "pyarrow<26",  # 26 needs numpy 2
        "setuptools<81",  # Ray 2.6.3 imports pkg_resources
        "ray[tune]>=2.3,<=2.6.3",  # RecBole 1.2.1 pins ray<=2.6.3
        "scipy",
        "matplotlib",
        "tqdm",
        "pyyaml",
        "psutil",
        "fastapi>=0.165",  # recbole-srgnn serve; lower bounds = the tested versions
        "uvicorn>=0.54",
        "httptools>=0.9",  # uvicorn's fast HTTP parser and event loop, used when installed
        "uvloop>=0.23; sys_platform != 'win32'",
        "pydantic>=2.14",
    ],
    extras_require={
        "test": ["pytest>=7"],
        "dev": ["pytest>=7"],
        "optuna": ["optuna==3.6.1"],  # tested with ray 2.6.3 (OptunaSearch) and numpy<2
    },
)
