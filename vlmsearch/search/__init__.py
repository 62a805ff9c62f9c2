"""Where a query is answered.

* ``request``: :class:`SearchRequest`, what a query asks for, checked before any work;
* ``query_vector``: how text, image and ``--not`` terms combine into one vector;
* ``searcher``: :class:`Searcher`, request → encoders → FAISS → records → results;
* ``results``: :class:`Hit`, :class:`TextHit` and :class:`SearchResults` (hits plus warnings).
"""

from .query_vector import NEGATIVE_WEIGHT, combine
from .request import SearchRequest
from .results import Hit, SearchResults, TextHit
from .searcher import Searcher

__all__ = ["NEGATIVE_WEIGHT", "Hit", "SearchRequest", "SearchResults", "Searcher", "TextHit",
           "combine"]
