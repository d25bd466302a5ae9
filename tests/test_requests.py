"""The request schema: a good JSONL file parses; every bad line is refused naming its line and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from recsys_tasks.model.requests import (
    MAX_HISTORY,
    MAX_ID,
    MAX_K,
    MAX_PROFILE_FIELD,
    MAX_TEXT,
    RequestError,
    parse_requests,
    read_requests,
)

FULL = {
    "request_id": "full",
    "user_id": "3",
    "profile": {"age": 24, "gender": "F", "occupation": "student", "zip_code": "02139"},
    "history": [{"item_id": "50", "rating": 5, "timestamp": 881250949}, {"item_id": "181"}],
    "text": "I like Sci-Fi and Horror movies.",
    "candidates": ["1", "2"],
    "exclude": ["3"],
    "k": 5,
}


def _write(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def _error(tmp_path: Path, bad: Any, line: int = 2) -> str:
    """The message for a file whose line ``line`` is ``bad`` and whose other lines are good."""
    lines = [{"request_id": f"ok-{n}"} for n in range(1, 4)]
    lines[line - 1] = bad
    with pytest.raises(RequestError) as err:
        read_requests(_write(tmp_path / "requests.jsonl", lines))
    message = str(err.value)
    assert f"requests.jsonl, line {line}:" in message
    return message


# ---------------------------------------------------------------- good input
def test_a_good_file_parses_into_plain_dicts_without_unset_fields(tmp_path: Path) -> None:
    requests = read_requests(_write(tmp_path / "r.jsonl", [FULL, {"request_id": "empty"}]))
    assert requests[1] == {"request_id": "empty"}
    assert requests[0] == {
        **FULL,
        "history": [{"item_id": "50", "rating": 5.0, "timestamp": 881250949}, {"item_id": "181"}],
    }
    assert isinstance(requests[0]["history"][0]["rating"], float)


def test_blank_lines_are_skipped_and_line_numbers_still_count_them(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.jsonl", [{"request_id": "a"}, "", "   ", {"request_id": "b"}, "\t"])
    assert [r["request_id"] for r in read_requests(path)] == ["a", "b"]
    _write(path, [{"request_id": "a"}, "", "", {"request_id": "b", "k": 0}])
    with pytest.raises(RequestError, match="r.jsonl, line 4: field k"):
        read_requests(path)


def test_an_empty_file_has_no_requests(tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").write_text("")
    assert read_requests(tmp_path / "r.jsonl") == []


@pytest.mark.parametrize("k", [1, MAX_K])
def test_k_at_its_bounds_is_accepted(k: int) -> None:
    assert parse_requests([{"request_id": "r", "k": k}]) == [{"request_id": "r", "k": k}]


def test_history_and_text_at_their_limits_are_accepted() -> None:
    (request,) = parse_requests(
        [{"request_id": "r", "history": [{"item_id": "1"}] * MAX_HISTORY, "text": "x" * MAX_TEXT}]
    )
    assert len(request["history"]) == MAX_HISTORY and len(request["text"]) == MAX_TEXT


def test_every_string_and_list_at_its_limit_is_accepted() -> None:
    ids, field = "i" * MAX_ID, "f" * MAX_PROFILE_FIELD
    (request,) = parse_requests(
        [
            {
                "request_id": ids,
                "user_id": ids,
                "history": [{"item_id": ids}],
                "profile": {"gender": field, "occupation": field, "zip_code": field},
                "candidates": [ids] * MAX_HISTORY,
                "exclude": [ids] * MAX_HISTORY,
            }
        ]
    )
    assert (
        request["profile"]["occupation"] == field
        and len(request["candidates"]) == len(request["exclude"]) == MAX_HISTORY
    )


# ---------------------------------------------------------------- bad input
def test_malformed_json_names_its_line(tmp_path: Path) -> None:
    message = _error(tmp_path, '{"request_id": "r", "k": 5', line=2)
    assert "not valid JSON" in message


def test_a_missing_file_raises_naming_it(tmp_path: Path) -> None:
    with pytest.raises(RequestError, match="nowhere.jsonl does not exist"):
        read_requests(tmp_path / "nowhere.jsonl")


# (bad line, the field its message must name, what the case guards)
BAD_REQUESTS = [
    ({"user_id": "3"}, "request_id", "request_id is required"),
    ({"request_id": 5}, "request_id", "ids are strings, not numbers"),
    ({"request_id": "r", "k": 0}, "k", "k below 1"),
    ({"request_id": "r", "k": MAX_K + 1}, "k", "k above 1000"),
    ({"request_id": "r", "k": "five"}, "k", "k not an integer"),
    ({"request_id": "r", "k": 2.5}, "k", "k with a fraction"),
    ({"request_id": "r", "history": [{"item_id": "1"}] * (MAX_HISTORY + 1)}, "history", "history over 10,000"),
    ({"request_id": "r", "history": "1,2,3"}, "history", "history not a list"),
    ({"request_id": "r", "history": [{"item_id": 50}]}, "history.0.item_id", "history item id not a string"),
    ({"request_id": "r", "history": [{"rating": 5}]}, "history.0.item_id", "history entry without item_id"),
    ({"request_id": "r", "history": [{"item_id": "1", "rating": "good"}]}, "history.0.rating", "rating not a number"),
    ({"request_id": "r", "text": "x" * (MAX_TEXT + 1)}, "text", "text over 10 KB"),
    ({"request_id": "r", "text": ["I like Drama"]}, "text", "text not a string"),
    ({"request_id": "r", "candidates": "1"}, "candidates", "candidates not a list"),
    ({"request_id": "r", "exclude": [1, 2]}, "exclude.0", "excluded ids not strings"),
    ({"request_id": "r", "profile": {"age": -1}}, "profile.age", "negative age"),
    ({"request_id": "r", "profile": {"age": 200}}, "profile.age", "age over 130"),
    ({"request_id": "r", "profile": "F, 24"}, "profile", "profile not an object"),
    ({"request_id": "r", "colour": "blue"}, "colour", "unknown top-level field"),
    ({"request_id": "r", "profile": {"salary": 1}}, "profile.salary", "unknown profile field"),
    ({"request_id": "r", "history": [{"item_id": "1", "liked": True}]}, "history.0.liked", "unknown history field"),
    ([{"request_id": "r"}], "<root>", "a line that is not an object"),
    ({"request_id": "r" * (MAX_ID + 1)}, "request_id", "request id over 256 characters"),
    ({"request_id": "r", "user_id": "u" * (MAX_ID + 1)}, "user_id", "user id over 256 characters"),
    (
        {"request_id": "r", "profile": {"occupation": "o" * (MAX_PROFILE_FIELD + 1)}},
        "profile.occupation",
        "occupation over 100 characters",
    ),
    (
        {"request_id": "r", "profile": {"gender": "g" * (MAX_PROFILE_FIELD + 1)}},
        "profile.gender",
        "gender over 100 characters",
    ),
    (
        {"request_id": "r", "profile": {"zip_code": "0" * (MAX_PROFILE_FIELD + 1)}},
        "profile.zip_code",
        "zip code over 100 characters",
    ),
    ({"request_id": "r", "history": [{"item_id": "i" * (MAX_ID + 1)}]}, "history.0.item_id", "history id too long"),
    ({"request_id": "r", "candidates": ["1"] * (MAX_HISTORY + 1)}, "candidates", "candidates over 10,000"),
    ({"request_id": "r", "candidates": ["c" * (MAX_ID + 1)]}, "candidates.0", "candidate id too long"),
    ({"request_id": "r", "exclude": ["1"] * (MAX_HISTORY + 1)}, "exclude", "excluded ids over 10,000"),
    ({"request_id": "r", "exclude": ["e" * (MAX_ID + 1)]}, "exclude.0", "excluded id too long"),
]


@pytest.mark.parametrize(("bad", "field"), [pytest.param(b, f, id=g) for b, f, g in BAD_REQUESTS])
def test_a_bad_request_names_its_line_and_field(tmp_path: Path, bad: Any, field: str) -> None:
    message = _error(tmp_path, bad, line=3)
    assert f"field {field}:" in message, message


def test_parse_requests_numbers_the_bad_request() -> None:
    with pytest.raises(RequestError, match=r"request 2: field k"):
        parse_requests([{"request_id": "a"}, {"request_id": "b", "k": 0}])


def test_the_first_bad_line_is_the_one_reported(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.jsonl", [{"request_id": "a"}, {"request_id": "b", "k": 0}, "{oops"])
    with pytest.raises(RequestError, match="line 2: field k"):
        read_requests(path)
