"""The names of the knowledge graph's entities: items and demographic values (no PyKEEN here).

Serving maps a new user's profile to these nodes to look up their trained vectors.
"""

from __future__ import annotations

import pandas as pd

from recsys_tasks.data.dataset import age_band

DEMOGRAPHICS = ("gender", "age", "occupation")  # the attributes whose values are entities, in `demographic_nodes` order


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


def demographic_values(users: pd.DataFrame) -> pd.DataFrame:
    """(user_id, attribute, node): `demographic_nodes` of every user at once, one row per known value."""
    parts = []
    for attribute in DEMOGRAPHICS:
        if attribute not in users:
            continue
        column = users[attribute]
        if attribute == "age":
            bands = column.map({a: age_band(a) for a in column.dropna().unique()}).fillna("unknown").astype(str)
            known, values = (bands != "unknown").to_numpy(), bands
        else:
            known = column.notna().to_numpy() & (column.fillna("").astype(str) != "").to_numpy()
            values = column.astype(str)
        parts.append(
            pd.DataFrame(
                {
                    "user_id": users["user_id"].astype(str)[known].to_numpy(),
                    "attribute": attribute,
                    "node": (attribute + ":" + values[known]).to_numpy(),
                }
            )
        )
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=str) for c in ("user_id", "attribute", "node")})
    return pd.concat(parts, ignore_index=True)
