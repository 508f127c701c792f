"""Face search over an attribute index of a photo collection.

- :mod:`mtfap.search.query`: the query language (``old man wearing glasses``) -> :class:`Query`;
- :mod:`mtfap.search.store`: the SQLite index of files, faces and their predictions;
- :mod:`mtfap.search.rank`: ranking of the stored faces by a query, by likeness of attributes,
  or by identity (dlib descriptors).

The language and its ranking are described in docs/SEARCH.md.
"""

from mtfap.search.query import Condition, Query, parse_query, vocabulary
from mtfap.search.rank import Ranking, rank_like, rank_person, rank_query, squared_norms
from mtfap.search.store import (
    FaceMatrix,
    FaceRecord,
    FileRecord,
    IndexStore,
    Plan,
    merge,
    shard_of,
)

__all__ = [
    "Condition", "FaceMatrix", "FaceRecord", "FileRecord", "IndexStore", "Plan", "Query",
    "Ranking", "merge", "parse_query", "rank_like", "rank_person", "rank_query", "shard_of",
    "squared_norms", "vocabulary",
]
