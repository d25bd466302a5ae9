"""The words a request uses for what the catalogue holds: genres and their synonyms, periods, negations.

Every phrase maps to genres of the catalogue's own vocabulary (lower case, as `explain.genres.genre_set`
gives them); a synonym whose genres the catalogue lacks is left out, so a catalogue without "western"
never reads "cowboys" as anything. A phrase names *alternatives*: "scary" is horror, "for my kids" is
children's or animation, "romcom" is romance and comedy together, "violent" any of five genres (which
"nothing violent" excludes all of).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from recsys_tasks.explain.genres import genre_pattern

__all__ = [
    "FILLER",
    "GENRE_SYNONYMS",
    "LIST_JOINERS",
    "NEGATION",
    "STOPWORDS",
    "Alternatives",
    "genre_phrases",
]

Alternatives = tuple[tuple[str, ...], ...]  # any one group, each group all of its genres
_VIOLENT: Alternatives = (("action",), ("crime",), ("horror",), ("war",), ("thriller",))

# phrase (a regex fragment, matched whole-word, any case) -> the genres it stands for
GENRE_SYNONYMS: dict[str, Alternatives] = {
    # horror
    r"scary|scariest|spooky|creepy|frightening|terrifying|horrifying|slashers?|zombies?|ghosts?|haunted"
    r"|halloween|gory|gore": (("horror",),),
    # comedy
    r"funny|funniest|hilarious|humou?r(?:ous)?|comedic|laughs?|laugh[- ]out[- ]loud|silly|goofy": (("comedy",),),
    # romance
    r"romantic|love[- ]stor(?:y|ies)|date[- ]night|romances?": (("romance",),),
    r"rom[- ]?coms?": (("romance", "comedy"),),
    # children's / animation
    r"(?:for\s+)?(?:my|the|our|young|whole)?\s*(?:whole\s+)?(?:kids|children(?!'?s\b)|toddlers?|little\s+ones|son|daughter"
    r"|family)|family[- ]friendly"
    r"|disney": (("children's",), ("animation",)),
    r"animated|cartoons?|anime|pixar": (("animation",),),
    # sci-fi
    r"sci[- ]?fi|science[- ]fiction|outer[- ]space|space|futuristic|robots?|time[- ]travel|extraterrestrials?"
    r"|spaceships?": (("sci-fi",),),
    # western
    r"cowboys?|wild[- ]west": (("western",),),
    # mystery
    r"whodunn?its?|detectives?|sleuths?|murder[- ]myster(?:y|ies)": (("mystery",),),
    # crime
    r"gangsters?|mob|mafia|heists?|cops?|criminals?": (("crime",),),
    # thriller
    r"suspense|suspenseful|edge[- ]of[- ](?:my|your|the)[- ]seat": (("thriller",),),
    # war
    r"battles?|soldiers?|military|world[- ]war(?:[- ](?:ii|2|two|i|1|one))?|wwii|ww2|vietnam": (("war",),),
    # documentary
    r"docs?|documentar(?:y|ies)|docu(?:mentary)?s?": (("documentary",),),
    # musical
    r"singing|song[- ]and[- ]dance|broadway": (("musical",),),
    # fantasy
    r"magic|magical|fairy[- ]tales?|dragons?|wizards?|sorcery": (("fantasy",),),
    # adventure
    r"adventurous|quests?|treasure[- ]hunts?": (("adventure",),),
    # action
    r"explosions?|shoot[- ]?(?:'?em|them)[- ]?ups?|martial[- ]arts|kung[- ]fu|car[- ]chases?": (("action",),),
    # drama
    r"serious|dramatic|tear[- ]?jerkers?": (("drama",),),
    # several
    r"violent|violence|brutal": _VIOLENT,
}

# What turns a genre or period into one to avoid ("no horror", "nothing before 1980", "anything but drama").
NEGATION = re.compile(
    r"\b(?:not|no|none|nothing|never|neither|nor|without|except|excluding|avoid|skip|hate|hates|dislike|dislikes"
    r"|detest|(?:do|does|did|is|are|was|were|ca|can|could|would|wo|should)n'?t|cannot|can\s+not"
    r"|can'?t\s+stand|anything\s+but|other\s+than|apart\s+from|aside\s+from|rather\s+not|sick\s+of|tired\s+of)\b",
    re.I,
)
# Words that may stand between a negation and what it negates ("don't want any horror", "nothing too recent").
FILLER = frozenset(
    "a an the any more too very so much really at all of with about in it from made released set that is are "
    "like want wanted enjoy enjoying care for need watch see stand movie movies film films stuff genre kind kinds type "
    "fan fans fond big huge into mood "
    "types sort please anything something things thing really particularly especially".split()
)
# What continues a list of negated genres ("no horror, thrillers or war").
LIST_JOINERS = frozenset(", / & and or nor no not any movie movies film films".split())

# Words of a request that carry no topic or mood (what is left after them is `Intent.free_text`).
STOPWORDS = frozenset(
    """a an the i i'm im i'd id me my we us our you your it its this that these those some any something anything
    everything one ones movie movies film films flick flicks picture pictures show shows watch watching see seeing
    want wanted would like liked love loved enjoy enjoyed prefer looking look find give get recommend recommendation
    recommendations suggest please thanks thank just really very so too more most much good great nice best
    fun cool awesome interesting favorite favourite kind kinds sort type types genre genres stuff thing things
    about of with without and or but nor not no nothing for to from in on at by as is are was be been am do does
    did can could should will shall may might must what which who whom whose when where why how all some also
    mood feel feeling tonight today night evening weekend time made released set during era year years decade
    old older new newer recent latest newest classic classics vintage modern current similar same vein lines
    maybe perhaps either neither other than else yeah hey hi hello lot lots bit little
    """.split()
)


def genre_phrases(vocabulary: Iterable[str]) -> list[tuple[str, Alternatives]]:
    """(regex, alternatives) for every genre of ``vocabulary`` (its own name as people write
    it and its `explain.genres` aliases) and every synonym of `GENRE_SYNONYMS` with a group in it; synonyms
    first, so "for my kids" is read as a whole before "kids" alone."""
    names = sorted(set(vocabulary))
    known = set(names)
    out: list[tuple[str, Alternatives]] = []
    for phrase, alternatives in GENRE_SYNONYMS.items():  # first: at one place, the first phrase that matches wins
        kept = tuple(group for group in alternatives if set(group) <= known)
        if kept:
            out.append((rf"\b(?:{phrase})\b", kept))
    out += [(genre_pattern(genre), ((genre,),)) for genre in names if genre not in ("", "unknown")]
    return out
