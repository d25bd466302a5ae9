"""The API's bodies: what it accepts beyond `requests.Request` (items to add) and what it answers.

An item is posted with the dataset's field names (``movie_title``, ``release_year``, ``class``)
or the plain ones (``title``, ``year``, ``genres``); either way it becomes a catalog row
(item_id, title, year, genres "|"-joined, description, entity_id). Every string and list is capped.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from recsys_tasks.limits import MAX_GENRES, MAX_ID, MAX_TEXT, MAX_TITLE

__all__ = [
    "FieldError",
    "IntentOut",
    "Invalid",
    "ItemIn",
    "ItemStatus",
    "ItemsOut",
    "LikedItem",
    "Problem",
    "Recommendation",
    "RecommendedItem",
    "ScoredItem",
    "Similar",
]

MAX_ITEMS_PER_POST = 1000
Genre = Annotated[str, Field(max_length=MAX_GENRES)]
ALIASES = {"title": "movie_title", "year": "release_year", "genres": "class"}


class ItemIn(BaseModel):
    """A catalog item to add or replace (a known ``item_id`` is replaced as a whole)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    item_id: str = Field(min_length=1, max_length=MAX_ID)
    title: str | None = Field(None, max_length=MAX_TITLE, validation_alias=AliasChoices("title", "movie_title"))
    year: int | None = Field(None, ge=1800, le=2200, validation_alias=AliasChoices("year", "release_year"))
    genres: list[Genre] | None = Field(None, max_length=MAX_GENRES, validation_alias=AliasChoices("genres", "class"))
    description: str | None = Field(None, max_length=MAX_TEXT)
    entity_id: str | None = Field(None, max_length=MAX_ID)

    @model_validator(mode="before")
    @classmethod
    def _one_name_per_field(cls, data: Any) -> Any:
        if isinstance(data, dict):
            both = [f"{plain}/{dataset}" for plain, dataset in ALIASES.items() if plain in data and dataset in data]
            if both:
                raise ValueError(f"give each field once, under one name: {', '.join(both)}")
        return data

    @field_validator("genres", mode="before")
    @classmethod
    def _split_genres(cls, value: Any) -> Any:
        """ "Action|Sci-Fi" (the CSV form), "Action Sci-Fi" (RecBole's ``class``) or a list."""
        if isinstance(value, str):
            return value.split("|") if "|" in value else value.split()
        return value

    @field_validator("genres")
    @classmethod
    def _clean_genres(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        genres = [g.strip() for g in value if g.strip()]
        bad = [g for g in genres if "|" in g]
        if bad:
            raise ValueError(f"a genre may not contain '|': {bad[:3]}")
        return list(dict.fromkeys(genres))

    def to_record(self) -> dict[str, Any]:
        """The catalog row (the snapshot's column names)."""
        return {
            "item_id": self.item_id,
            "title": self.title or "",
            "year": self.year,
            "genres": "|".join(self.genres or []),
            "description": self.description or "",
            "entity_id": self.entity_id or "",
        }


class ItemStatus(BaseModel):
    item_id: str
    status: str = Field(description="added or updated")
    kg: str = Field(
        description="where the KG part came from: item (its own node), entity (the trained item "
        "linked to entity_id) or none (zeros)"
    )


class ItemsOut(BaseModel):
    items: list[ItemStatus]
    catalog_size: int
    model_version: str


class ScoredItem(BaseModel):
    item_id: str
    score: float


class RecommendedItem(ScoredItem):
    reason: str = Field(
        description="why it is recommended, from the model's own inputs "
        "(`recsys_tasks.explain.reasons`), "
        'e.g. "shares its director with Alien", "matches \'sci-fi\'", '
        '"popular with students aged 18-24", "new: similar content to Star Wars"',
        examples=["shares its director with Alien"],
    )
    title: str | None = Field(None, description='as people write it ("The Godfather"); null where unknown')
    year: int | None = Field(None, description="release year; null where unknown")
    genres: list[str] = Field(default_factory=list, description="as the catalog writes them")


class LikedItem(BaseModel):
    item_id: str
    title: str


class IntentOut(BaseModel):
    """What the request's ``text`` was understood to ask for (`recsys_tasks.intent`)."""

    genres: list[list[str]] = Field(
        description="alternatives, each a group of genres an item must all have (romcom: [[romance, comedy]])"
    )
    exclude: list[str] = Field(description="genres no recommended item has")
    years: list[int | None] | None = Field(description="[first, last] release year, either null (open); null: any")
    like: list[LikedItem] = Field(description='items named as models ("like Toy Story"): similar ones rank higher')
    free_text: str = Field(description="words no rule read: a topic or mood, ranked by text similarity")
    relaxed: list[str] = Field(
        description="constraints relaxed because too few items fit them, weakest first (years, then genres)"
    )
    taste: bool = Field(
        description='the genres are a stated taste ("I like Sci-Fi movies"): they rank the items rather than gate them'
    )


class Recommendation(BaseModel):
    request_id: str
    items: list[RecommendedItem]
    model_version: str
    variant: Literal["champion", "challenger"] = Field(
        description="which alias answered: the challenger answers the users of `challenger_share` (a stable hash of "
        "user_id, else request_id), the champion everyone else"
    )
    intent: IntentOut | None = Field(None, description="the parse of the request's text; absent without text")


class Similar(BaseModel):
    item_id: str
    items: list[ScoredItem]
    model_version: str


class Problem(BaseModel):
    """The body of a 401, 404, 409 or 413: what went wrong, in words."""

    detail: str


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: body, then the field's path")
    msg: str
    type: str


class Invalid(BaseModel):
    """The body of a 422: each invalid field, named (the offending input is not echoed back)."""

    detail: list[FieldError]
