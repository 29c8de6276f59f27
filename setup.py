from setuptools import find_packages, setup

setup(
    name="spotgym",
    version="0.1.0",
    description="Gym-centric RL research environment for crypto spot trading (Binance ETH/USDT)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["spotgym", "spotgym.*"]),
    install_requires=[
        "numpy>=1.26",
        "pandas>=2.1",
        "pyarrow>=14",
        "numba>=0.59",
        "ta>=0.11",
        "ccxt>=4.3",
        "fastapi>=0.110",
        "uvicorn>=0.29",
        "websockets>=12",
        "httpx>=0.27",
        "tqdm>=4.66",
        "pyyaml>=6",
        "gymnasium>=1.0",
        "stable-baselines3>=2.3",
        "sb3-contrib>=2.3",
        # 2.13 is the local CPU wheel; keep the range satisfiable by it.
        "torch>=2.2,<3",
        "scikit-learn>=1.4",
        "optuna>=3.6",
        "tensorboard>=2.16",
        "wandb>=0.17",
        "plotly>=5.20",
    ],
    extras_require={
        "dev": ["pytest>=8", "ruff>=0.5", "psycopg2-binary>=2.9"],
    },
    entry_points={"console_scripts": ["spotgym=spotgym.cli:main"]},
)
