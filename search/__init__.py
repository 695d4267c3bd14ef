"""xmodal's query side: search an index by text or by picture."""

from search.engine import SearchEngine
from search.hits import Hit

__all__ = ["SearchEngine", "Hit"]
