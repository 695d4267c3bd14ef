"""xmodal's query side: search an index by text or by picture."""

from xmodal.search.engine import SearchEngine
from xmodal.search.hits import Hit

__all__ = ["SearchEngine", "Hit"]
