"""Small files shipped with xmodal (the offline default's trained head, model configs)."""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent


def data_path(name: str) -> Path:
    """Absolute path of a shipped data file."""
    return DATA_DIR / name
