"""The names of the knowledge graph's entities: items and demographic values (no PyKEEN here).

Serving maps a new user's profile to these nodes to look up their trained vectors.
"""

from __future__ import annotations

from recsys_tasks.data.dataset import age_band


def item_node(item_id: str) -> str:
    return f"item:{item_id}"


def demographic_nodes(profile: dict) -> list[str]:
    """The KG entities of a profile's demographic values (those that are known)."""
    nodes = []
    if profile.get("gender"):
        nodes.append(f"gender:{profile['gender']}")
    band = age_band(profile.get("age"))
    if band != "unknown":
        nodes.append(f"age:{band}")
    if profile.get("occupation"):
        nodes.append(f"occupation:{profile['occupation']}")
    return nodes
