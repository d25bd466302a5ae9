"""Field limits shared by the pipeline (extract refuses longer values) and the API (which refuses longer
requests and items), so data the API would refuse never enters a snapshot, and the other way round."""

from __future__ import annotations

__all__ = ["MAX_GENRES", "MAX_HISTORY", "MAX_ID", "MAX_K", "MAX_PROFILE_FIELD", "MAX_TEXT", "MAX_TITLE"]

MAX_ID = 256  # characters of a request, user, item or KG entity id
MAX_TITLE = 1000  # characters of an item's title
MAX_TEXT = 10_000  # characters of a stated taste or an item's description
MAX_GENRES = 64  # genres of one item, and characters of one genre
MAX_PROFILE_FIELD = 100  # characters of gender, occupation or zip code
MAX_HISTORY = 10_000  # entries of a request's history; also its candidates and excluded ids
MAX_K = 1000  # items one request may ask for
