"""The one-box query planner: a plain query read as its parts.

"dog on the beach in Lisbon last summer" is a visual query ("dog on the beach"), a place (Lisbon, a
place this index holds) and a range of dates (last summer); `"OPEN" sign` asks for a word in the
photo; "去年夏天在东京的照片" is a date and a place too. Dates and places filter inside the search,
words in the photo and in file or folder names are scored beside the visual score
(search.fusion), and what is left is embedded as before.

Dates are parsed by `dateparser` (English and Chinese, relative to an injectable "today"); this
module only finds the words that may be a date (so "2 dogs" is never the 2nd of the month) and adds
what dateparser does not know: seasons (meteorological, northern hemisphere: summer is June to
August, winter Y is December Y to February Y+1) and ranges ("between March and May 2022").

Places are only names that occur in this index (`places`: the index's known places), in English
or through the Chinese dictionary (东京 → Tokyo). A word that is also a common English word ("a nice
view") is a place only when written as a name: capitalised, and not the first word of a query that
goes on describing something ("Nice view" is a view; "Nice 2019" and "sunset in Nice" are Nice).
"""

from __future__ import annotations

import calendar
import re
import shlex
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Literal

from xmodal.indexer.errors import InvalidQueryError
from xmodal.search.query import QueryTerm, parse_query

__all__ = [
    "PARTS",
    "DateRange",
    "Part",
    "QueryPlanner",
    "Understood",
    "read_language",
    "read_literally",
    "understand",
]

Part = Literal["visual", "text_in_photo", "place", "date", "name"]
PARTS: tuple[Part, ...] = ("visual", "text_in_photo", "place", "date", "name")
WordLookup = Callable[[Sequence[str]], Collection[str]]


@dataclass(frozen=True)
class DateRange:
    """Whole days, both ends included; `text` is the words it was read from."""

    start: date
    end: date
    text: str

    def as_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "text": self.text}

    def __str__(self) -> str:
        return self.start.isoformat() if self.start == self.end else f"{self.start.isoformat()}…{self.end.isoformat()}"


@dataclass(frozen=True)
class Understood:
    """What a plain query was read as. `visual` is embedded (None: nothing visual was asked for);
    `in_photo` are words to find in the photos' text (quoted, or query words the photos' text has);
    `names` are query words found in file and folder names; `not_understood` are words that looked
    like a date or a place but are not one here (a place no photo is from, a date not read)."""

    query: str
    visual: str | None
    dates: DateRange | None = None
    place: str | None = None
    place_text: str | None = None  # the words the place was read from ("in Lisbon", "东京")
    in_photo: tuple[str, ...] = ()
    quoted: tuple[str, ...] = ()  # the part of in_photo the user quoted (asked for explicitly)
    names: tuple[str, ...] = ()
    not_understood: tuple[str, ...] = ()
    reading: str | None = None  # the English a Chinese visual part is read as (filled by read_language)
    literal: bool = False  # the whole query is the visual query, nothing else was read
    # filled by read_language: each Chinese text term of the visual part with the English it is read
    # as (a combined query has several), the words the dictionary lacks that were read by their
    # characters, and a note when the query's language is not understood yet
    read_as: tuple[tuple[str, str], ...] = ()
    guessed: tuple[str, ...] = ()
    note: str | None = None

    @property
    def parts(self) -> list[Part]:
        out: list[Part] = []
        if self.visual:
            out.append("visual")
        if self.in_photo:
            out.append("text_in_photo")
        if self.place:
            out.append("place")
        if self.dates:
            out.append("date")
        if self.names:
            out.append("name")
        return out

    @property
    def plain(self) -> bool:
        """Nothing but a visual query was read: searching it is searching the query as before."""
        return self.literal or (self.parts in (["visual"], []) and self.visual == self.query)

    @property
    def explained(self) -> bool:
        """Whether `line` says more than the query itself: a part was read, a Chinese term was
        read as English, a word was not understood, or the language is not understood yet."""
        return not self.plain or bool(self.read_as or self.guessed or self.not_understood or self.note)

    def as_dict(self) -> dict[str, object]:
        return {
            "query": self.query,
            "visual": self.visual,
            "reading": self.reading,
            "dates": self.dates.as_dict() if self.dates else None,
            "place": self.place,
            "place_text": self.place_text,
            "in_photo": list(self.in_photo),
            "names": list(self.names),
            "not_understood": list(self.not_understood),
            "parts": list(self.parts),
            "literal": self.literal,
            "read_as": [{"text": text, "english": english} for text, english in self.read_as],
            "guessed": list(self.guessed),
            "note": self.note,
        }

    def line(self) -> str:
        """One line for people: `searching "dog on the beach" · Lisbon · 2025-06-01…2025-08-31`."""
        shown = self.visual if self.visual and '"' in self.visual else f'"{self.visual}"'
        pieces = [f"searching {shown}" if self.visual else "searching"]
        if len(self.read_as) == 1 and self.read_as[0][0] == self.visual:
            pieces[0] += f', read as "{self.read_as[0][1]}"'
        elif self.read_as:
            pieces[0] += ", reading " + ", ".join(f'"{text}" as "{english}"' for text, english in self.read_as)
        elif self.reading:
            pieces[0] += f', read as "{self.reading}"'
        if self.place:
            pieces.append(self.place)
        if self.dates:
            pieces.append(str(self.dates))
        if self.in_photo:
            pieces.append("text in photo: " + ", ".join(f'"{w}"' for w in self.in_photo))
        if self.names:
            pieces.append("names: " + ", ".join(self.names))
        text = " · ".join(pieces)
        if self.not_understood:
            text += "; not understood: " + ", ".join(self.not_understood)
        if self.guessed:
            text += "; not in the dictionary, read by their characters: " + ", ".join(self.guessed)
        if self.note:
            text += f"; note: {self.note}"
        return text


# --- words -------------------------------------------------------------------------------------
_WORD = re.compile(r"[^\W_](?:[\w'’.\-/]*[^\W_])?")
_QUOTED = re.compile(r'"([^"]+)"|“([^”]+)”|「([^」]+)」|『([^』]+)』')
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
STOP_WORDS = frozenset(
    "a an the of in on at from to near around during by with and or for this that these those my our your "
    "his her their its some any is are was were be taken shot".split()
)
# Words that say "a photo" and nothing about what is in it: a query of only these has no visual part.
_GENERIC = frozenset("photo photos picture pictures pic pics image images shot shots snapshot snapshots".split())
_PLACE_PREPOSITIONS = frozenset("in at from near around to of".split())
_DATE_PREPOSITIONS = frozenset("in on during from of since taken".split())
_CHINESE_FILLER = re.compile(r"^[在于从的里中拍摄照片相片图片时候期间]+|[在于从的里中拍摄照片相片图片时候期间]+$")

# --- dates: which words may be one (dateparser says what they mean) ----------------------------
_MONTHS = {
    name: number
    for number, names in enumerate(
        [
            (),
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ]
    )
    for name in names
}
# Month names that are also common words: a month only when written as one or next to a year/day.
_AMBIGUOUS_MONTHS = frozenset(("may", "march", "mar", "jan", "sat", "sun", "dec", "aug", "oct"))
_SEASONS = {"spring": 3, "summer": 6, "autumn": 9, "fall": 9, "winter": 12}  # first month
_QUALIFIERS = frozenset(("last", "this", "past", "previous"))
_UNITS = frozenset(("day", "week", "weekend", "month", "year"))
_WEEKDAYS = frozenset("monday tuesday wednesday thursday friday saturday sunday".split())
_ALONE = frozenset(("today", "yesterday", "tonight"))
_AGO_UNITS = frozenset(("day", "days", "week", "weeks", "month", "months", "year", "years"))
_NUMBER_WORDS = frozenset("a an one two three four five six seven eight nine ten".split())
_ISO = re.compile(r"^\d{4}[-/.]\d{1,2}(?:[-/.]\d{1,2})?$")
_DAY = re.compile(r"^(\d{1,2})(?:st|nd|rd|th)?$")
_RANGE_OPEN = {"between": "and", "from": "to"}
_RANGE_JOIN = frozenset(("to", "until", "till", "through", "-", "–", "and"))

# Chinese: atoms that may make a date; runs of them are parsed together.
_ZH_NUM = "0-9〇零一二三四五六七八九十两"
_ZH_ATOM = re.compile(
    rf"[{_ZH_NUM}]{{4}}年|[{_ZH_NUM}]{{1,3}}(?:个)?(?:月|日|号|天前|年前|个月前|周前|星期前)|"
    r"去年|今年|前年|明年|昨天|今天|前天|上个?月|这个月|本月|上个?星期|上个?周|这个?星期|这周|本周|"
    r"[春夏秋冬](?:天|季)"
)
_ZH_JOIN = re.compile(r"^(?:的|到|至|-|－|~|～|和)$")
_ZH_RANGE = re.compile(r"到|至|-|－|~|～")
_ZH_SEASONS = {"春": 3, "夏": 6, "秋": 9, "冬": 12}
# Relative words dateparser's Chinese data lacks, in the English it reads.
_ZH_RELATIVE = {
    "前年": "2 years ago",
    "这个月": "this month",
    "本月": "this month",
    "上个星期": "last week",
    "上星期": "last week",
    "这个星期": "this week",
    "这星期": "this week",
    "这周": "this week",
}
_ZH_YEAR = re.compile(r"^(\d{4})年$")


@dataclass(frozen=True)
class _Token:
    text: str
    start: int
    end: int

    @property
    def low(self) -> str:
        return self.text.lower()


def _tokens(text: str) -> list[_Token]:
    return [_Token(m.group(0), m.start(), m.end()) for m in _WORD.finditer(text)]


def _is_year(word: str, today: date) -> bool:
    return len(word) == 4 and word.isdigit() and 1900 <= int(word) <= today.year + 1


def _is_month(token: _Token, neighbours: Sequence[_Token], today: date) -> bool:
    low = token.low.rstrip(".")
    if low not in _MONTHS:
        return False
    if low not in _AMBIGUOUS_MONTHS:
        return True
    near = {n.low for n in neighbours}
    # "May", "in march", "may 2022", "5 may": a month; "a man may fall" is not.
    return (
        token.text[:1].isupper()
        or any(_is_year(n, today) or _DAY.match(n) is not None for n in near)
        or bool(near & {"in", "since", "until", "between", "last", "this", "early", "late", "mid"})
    )


class _DateReader:
    """Dates in one query relative to `today`: spans found here, meanings from dateparser."""

    def __init__(self, today: date) -> None:
        self.today = today
        self.base = datetime(today.year, today.month, today.day, 12, 0)

    # dateparser ----------------------------------------------------------------------------
    def parse(self, text: str, language: str) -> tuple[date, date] | None:
        from dateparser.date import DateDataParser

        settings = {
            "RELATIVE_BASE": self.base,
            "PREFER_DATES_FROM": "past",
            "PREFER_DAY_OF_MONTH": "first",
            "RETURN_TIME_AS_PERIOD": True,
        }
        if language == "zh":
            if match := _ZH_YEAR.match(text):  # dateparser reads a lone "2019年" as the year 7
                text, language = match.group(1), "en"
            elif text in _ZH_RELATIVE:
                text, language = _ZH_RELATIVE[text], "en"
        parser = DateDataParser(languages=[language], settings=settings)
        try:
            data = parser.get_date_data(text)
        except (ValueError, OverflowError, TypeError):
            return None
        found = data.date_obj
        if found is None:
            return None
        day = found.date()
        if data.period == "year":
            return date(day.year, 1, 1), date(day.year, 12, 31)
        if data.period == "month":
            return day.replace(day=1), day.replace(day=calendar.monthrange(day.year, day.month)[1])
        if data.period == "week":
            monday = day - timedelta(days=day.weekday())
            return monday, monday + timedelta(days=6)
        return day, day

    def season(self, first_month: int, year: int | None, qualifier: str | None) -> tuple[date, date]:
        """A season of a year; without one, "last" is the latest that has ended, "this" the one of
        today's year."""
        if year is None:
            year = self.today.year
            if qualifier in ("last", "past", "previous"):
                start, end = _season_of(first_month, year)
                while end >= self.today:
                    year -= 1
                    start, end = _season_of(first_month, year)
        return _season_of(first_month, year)

    # English -------------------------------------------------------------------------------
    def phrase_at(
        self, tokens: Sequence[_Token], i: int, low: Sequence[str] | None = None
    ) -> tuple[int, tuple[date, date]] | None:
        """The longest date phrase starting at token i: (end index, range). `low`: the tokens lower-cased,
        given by a caller that tries every start (lowering them per start is quadratic in a long query)."""
        n = len(tokens)
        low = [t.low for t in tokens] if low is None else low
        first = low[i]
        nxt = low[i + 1] if i + 1 < n else ""
        # today, yesterday
        if first in _ALONE:
            found = self.parse(first, "en")
            return (i + 1, found) if found else None
        # N days ago, a week ago
        if (first.isdigit() or first in _NUMBER_WORDS) and nxt in _AGO_UNITS and i + 2 < n and low[i + 2] == "ago":
            found = self.parse(" ".join(low[i : i + 3]), "en")
            return (i + 3, found) if found else None
        # last summer, this year, last June, last monday
        if first in _QUALIFIERS and nxt:
            if nxt in _SEASONS and not (nxt == "fall" and first == "this"):
                year = int(low[i + 2]) if i + 2 < n and _is_year(low[i + 2], self.today) else None
                return i + 2 + (year is not None), self.season(_SEASONS[nxt], year, first)
            if nxt in _UNITS or nxt in _WEEKDAYS:
                word = "last" if first in ("past", "previous") else first
                found = self.parse(f"{word} {nxt}", "en")
                return (i + 2, found) if found else None
            if nxt.rstrip(".") in _MONTHS:
                found = self.parse(nxt, "en")  # the latest such month that has begun
                return (i + 2, found) if found else None
        # summer 2019, summer of 2019 (a season needs a year or a qualifier: "a summer day" is a look)
        if first in _SEASONS:
            j = i + 1 + (nxt == "of")
            if j < n and _is_year(low[j], self.today):
                return j + 1, self.season(_SEASONS[first], int(low[j]), None)
            return None
        # 2019 summer
        if _is_year(first, self.today) and nxt in _SEASONS:
            return i + 2, self.season(_SEASONS[nxt], int(first), None)
        # 2021-06-05, 2021-06
        if _ISO.match(first):
            found = self.parse(first, "en")
            return (i + 1, found) if found else None
        # [5] June [5][,] [2021], June 2023, March
        j = i
        if _DAY.match(first) and i + 1 < n and _is_month(tokens[i + 1], tokens[i : i + 3], self.today):
            j = i + 1
        elif first == "the" and i + 3 < n and _DAY.match(low[i + 1]) and low[i + 2] == "of":
            j = i + 3
        if j < n and _is_month(tokens[j], tokens[max(0, j - 1) : j + 3], self.today):
            end = j + 1
            if end < n and _DAY.match(low[end]) and end > i and not _DAY.match(low[i]):
                end += 1
            elif end < n and _DAY.match(low[end]) and j == i:
                end += 1
            if end < n and _is_year(low[end], self.today):
                end += 1
            found = self.parse(" ".join(t.text for t in tokens[i:end]), "en")
            return (end, found) if found else None
        if _is_year(first, self.today):
            found = self.parse(first, "en")
            return (i + 1, found) if found else None
        return None

    def english(self, tokens: Sequence[_Token]) -> tuple[int, int, tuple[date, date]] | None:
        """The first date (or range of dates) in the tokens: (first token, end token, range)."""
        low = [t.low for t in tokens]
        for i in range(len(tokens)):
            opener = low[i] if low[i] in _RANGE_OPEN or low[i] in ("since", "after", "before", "until") else None
            begin = i + 1 if opener else i
            if begin >= len(tokens):
                continue
            found = self.phrase_at(tokens, begin, low)
            if found is None:
                continue
            end, (start, stop) = found
            # a range: between A and B, from A to B, A to B, A - B
            if end + 1 < len(tokens) and low[end] in _RANGE_JOIN and (opener in _RANGE_OPEN or low[end] != "and"):
                right = self.phrase_at(tokens, end + 1, low)
                if right is not None:
                    right_end, (r_start, r_stop) = right
                    left_has_year = any(_is_year(w, self.today) for w in low[begin:end])
                    right_year = next((w for w in low[end + 1 : right_end] if _is_year(w, self.today)), None)
                    if not left_has_year and right_year is not None:  # "between March and May 2022"
                        again = self.parse(" ".join(t.text for t in tokens[begin:end]) + f" {right_year}", "en")
                        start, stop = again if again else (start, stop)
                    if r_stop >= start:
                        return i, right_end, (start, r_stop)
            if opener in ("since", "after"):
                lower = start if opener == "since" else stop + timedelta(days=1)
                return i, end, (lower, max(lower, self.today))
            if opener in ("before", "until"):
                upper = start - timedelta(days=1) if opener == "before" else stop
                return i, end, (date(1900, 1, 1), upper)
            return begin, end, (start, stop)
        return None

    # Chinese -------------------------------------------------------------------------------
    def chinese(self, text: str) -> tuple[int, int, tuple[date, date]] | None:
        """The first run of Chinese date words: (start char, end char, range)."""
        atoms = list(_ZH_ATOM.finditer(text))
        k = 0
        while k < len(atoms):
            run_start, run_end = atoms[k].start(), atoms[k].end()
            parts = [atoms[k].group(0)]
            m = k + 1
            while m < len(atoms) and (
                atoms[m].start() == run_end or _ZH_JOIN.match(text[run_end : atoms[m].start()]) is not None
            ):
                parts.append(text[run_end : atoms[m].start()] + atoms[m].group(0))
                run_end = atoms[m].end()
                m += 1
            found = self._chinese_run(text[run_start:run_end])
            if found is not None:
                return run_start, run_end, found
            k = m
        return None

    def _chinese_run(self, run: str) -> tuple[date, date] | None:
        sides = [s.strip("的") for s in _ZH_RANGE.split(run) if s.strip("的")]
        if not sides or len(sides) > 2:
            return None
        years = [re.search(rf"[{_ZH_NUM}]{{4}}年|去年|今年|前年|明年", s) for s in sides]
        read: list[tuple[date, date]] = []
        for side, year in zip(sides, years):
            if year is None and any(years):  # 2022年3月到5月: the other side's year
                side = next(y.group(0) for y in years if y) + side
            found = self._chinese_side(side)
            if found is None:
                return None
            read.append(found)
        return read[0][0], read[-1][1]

    def _chinese_side(self, side: str) -> tuple[date, date] | None:
        season = re.search(r"([春夏秋冬])(?:天|季)", side)
        rest = side[: season.start()] + side[season.end() :] if season else side
        rest = rest.replace("的", "")
        if season is None:
            return self.parse(rest, "zh")
        first_month = _ZH_SEASONS[season.group(1)]
        if not rest:
            return None  # 夏天 alone: a look ("a summer day"), not a date
        year = self.parse(rest, "zh")
        return self.season(first_month, year[0].year if year else None, None) if year else None


def _season_of(first_month: int, year: int) -> tuple[date, date]:
    start = date(year, first_month, 1)
    last_month = first_month + 2
    end_year = year + (last_month > 12)
    last_month = (last_month - 1) % 12 + 1
    return start, date(end_year, last_month, calendar.monthrange(end_year, last_month)[1])


# --- places ------------------------------------------------------------------------------------
_COMMON_WORDS: frozenset[str] | None = None
_COMMON_LOCK = threading.Lock()


def common_english_words() -> frozenset[str]:
    """English words in everyday use: every word of CC-CEDICT's lower-case English glosses (its
    proper names are capitalised: "Nice" is a city's gloss, "nice" a common word's)."""
    from xmodal.indexer.models.chinese.dictionary import load_dictionary

    global _COMMON_WORDS
    with _COMMON_LOCK:
        if _COMMON_WORDS is None:
            words = {
                word.lower()
                for glosses in load_dictionary().glosses.values()
                for gloss in glosses
                for word in gloss.split()
                if word[:1].islower()
            }
            _COMMON_WORDS = frozenset(words | STOP_WORDS)
        return _COMMON_WORDS


def chinese_place_names(places: Iterable[str]) -> dict[str, str]:
    """Chinese word → known place, for the places whose name is a CC-CEDICT gloss (东京 → Tokyo)."""
    from xmodal.indexer.models.chinese.dictionary import load_dictionary

    wanted = {p.lower(): p for p in places}
    if not wanted:
        return {}
    out: dict[str, str] = {}
    for word, glosses in load_dictionary().glosses.items():
        if len(word) < 2 or not _HAN.match(word):
            continue
        for gloss in glosses:
            place = wanted.get(gloss.lower())
            if place is not None and gloss[:1].isupper():
                out.setdefault(word, place)
                break
    return out


# --- the planner -------------------------------------------------------------------------------
@dataclass
class QueryPlanner:
    """Reads queries against one index's vocabulary: its `places`, and lookups telling which of some
    words occur in its photos' text (`photo_words`) and in its file and folder names (`name_words`).
    `today` fixes relative dates (tests, reproducible runs); None is the current date."""

    places: Collection[str] = ()
    photo_words: WordLookup | None = None
    name_words: WordLookup | None = None
    today: date | None = None
    _place_index: dict[str, str] = field(init=False, repr=False)
    _chinese_places: dict[str, str] | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self._place_index = {" ".join(_WORD.findall(p.lower())): p for p in self.places if _WORD.search(p)}

    def understand(self, query: str, ignore: Collection[str] = (), today: date | None = None) -> Understood:
        """The parts of a plain query. Parts named in `ignore` ("date", "place", "text_in_photo",
        "name") are not read: their words stay in the visual query. `today` overrides the planner's."""
        day = today or self.today or date.today()
        text = " ".join(query.split())
        if not text:
            return Understood(query=query, visual=None, literal=True)
        try:
            terms = parse_query(text)
        except InvalidQueryError:
            terms = [QueryTerm(1.0, "text", text)]
        if len(terms) == 1 and terms[0].kind == "image":
            return Understood(query=text, visual=text, literal=True)
        if len(terms) > 1:
            return self._combined(text, terms, ignore, day)
        return self._plain(text, ignore, day)

    def _combined(self, text: str, terms: Sequence[QueryTerm], ignore: Collection[str], today: date) -> Understood:
        """`"dog in Lisbon" - "snow"`: dates and places are read from the positive text terms, the
        rest of each term stays a term; quotes delimit terms here, so they ask for no text in photo."""
        ignore = {*ignore, "text_in_photo"}
        kept: list[QueryTerm] = []
        dates = place = place_text = None
        not_understood: list[str] = []
        names: list[str] = []
        for term in terms:
            if term.kind != "text" or term.weight <= 0:
                kept.append(term)
                continue
            once = {*ignore, *(("date",) if dates else ()), *(("place",) if place else ())}
            part = self._plain(term.value, once, today)
            dates, place = dates or part.dates, place or part.place
            place_text = place_text or part.place_text
            not_understood += part.not_understood
            names += [n for n in part.names if n not in names]
            if part.visual:
                kept.append(replace(term, value=part.visual))
        if not any(t.weight > 0 for t in kept):
            kept = list(terms)  # nothing describing is left: the terms as they were
        visual = _join_terms(kept) if dates or place else text
        return Understood(
            query=text,
            visual=visual,
            dates=dates,
            place=place,
            place_text=place_text,
            names=tuple(names),
            not_understood=tuple(not_understood),
        )

    def _plain(self, text: str, ignore: Collection[str], today: date) -> Understood:
        removed: list[tuple[int, int]] = []  # character spans no longer visual
        not_understood: list[str] = []

        quoted: list[str] = []
        if "text_in_photo" not in ignore:
            for m in _QUOTED.finditer(text):
                quoted.append(next(g for g in m.groups() if g).strip())
                removed.append(m.span())
            if removed and _residue(text, removed) is None:  # only quoted text: it is the look too
                removed = []

        dates = None
        if "date" not in ignore:
            dates = self._dates(text, removed, today)

        place = place_text = None
        if "place" not in ignore and self._place_index:
            found = self._place(text, removed)
            if found is not None:
                place, span = found
                place_text = text[span[0] : span[1]]
                removed.append(span)
        if "place" not in ignore:
            not_understood += self._unknown_places(text, removed)

        visual = _residue(text, removed)
        words = [w for w in _WORD.findall(visual.lower()) if w not in STOP_WORDS] if visual else []
        in_photo = list(quoted)
        if "text_in_photo" not in ignore and self.photo_words is not None and words:
            found_words = set(self.photo_words(words))
            in_photo += [w for w in dict.fromkeys(words) if w in found_words and w not in quoted]
        names: list[str] = []
        if "name" not in ignore and self.name_words is not None and words:
            found_names = set(self.name_words(words))
            names = [w for w in dict.fromkeys(words) if w in found_names]
        return Understood(
            query=text,
            visual=visual,
            dates=dates,
            place=place,
            place_text=place_text,
            in_photo=tuple(in_photo),
            quoted=tuple(quoted),
            names=tuple(names),
            not_understood=tuple(not_understood),
        )

    # dates -----------------------------------------------------------------------------------
    def _dates(self, text: str, removed: list[tuple[int, int]], today: date) -> DateRange | None:
        reader = _DateReader(today)
        if _HAN.search(text):
            found_zh = reader.chinese(text)
            if found_zh is not None:
                start, end, (first, last) = found_zh
                removed.append((start, end))
                return DateRange(first, last, text[start:end])
        tokens = [t for t in _tokens(text) if not _inside(t.start, removed)]
        found = reader.english(tokens)
        if found is None:
            return None
        i, j, (first, last) = found
        begin = i - 1 if i > 0 and tokens[i - 1].low in _DATE_PREPOSITIONS else i
        span = (tokens[begin].start, tokens[j - 1].end)
        removed.append(span)
        return DateRange(first, last, text[tokens[i].start : tokens[j - 1].end])

    # places ----------------------------------------------------------------------------------
    def _place(self, text: str, removed: list[tuple[int, int]]) -> tuple[str, tuple[int, int]] | None:
        if _HAN.search(text):
            if self._chinese_places is None:
                self._chinese_places = chinese_place_names(self._place_index.values())
            for word in sorted(self._chinese_places, key=len, reverse=True):
                at = text.find(word)
                if at >= 0 and not _inside(at, removed):
                    return self._chinese_places[word], (at, at + len(word))
        tokens = [t for t in _tokens(text) if not _inside(t.start, removed)]
        longest = max((len(k.split()) for k in self._place_index), default=0)
        for size in range(min(longest, len(tokens)), 0, -1):
            for i in range(len(tokens) - size + 1):
                words = tokens[i : i + size]
                place = self._place_index.get(" ".join(t.low for t in words))
                if place is None or not self._reads_as_place(tokens, i, size, text, removed):
                    continue
                begin = i - 1 if i > 0 and tokens[i - 1].low in _PLACE_PREPOSITIONS else i
                return place, (tokens[begin].start, words[-1].end)
        return None

    def _reads_as_place(
        self, tokens: Sequence[_Token], i: int, size: int, text: str, removed: list[tuple[int, int]]
    ) -> bool:
        """Whether words that spell a known place mean it here (see the module's note)."""
        words = tokens[i : i + size]
        common = common_english_words()
        if not all(w.low in common for w in words):
            return True  # "lisbon", "new york": no everyday word to confuse it with
        if not all(w.text[:1].isupper() for w in words):
            return False  # "a nice view", "in nice weather"
        if i > 0:
            return True  # "sunset in Nice", "Reading station" after a word
        # First word of the query, capitalised: a name only when nothing else describes a look.
        rest = _residue(text, [*removed, (words[0].start, words[-1].end)])
        return rest is None

    def _unknown_places(self, text: str, removed: list[tuple[int, int]]) -> list[str]:
        """Capitalised words after "in/at/from" that are no place of this index ("in Atlantis")."""
        tokens = [t for t in _tokens(text) if not _inside(t.start, removed)]
        out = []
        for before, word in zip(tokens, tokens[1:]):
            if before.low in ("in", "at", "from") and word.text[:1].isupper() and word.low not in STOP_WORDS:
                if word.low not in common_english_words():
                    out.append(word.text)
        return out


def _join_terms(terms: Sequence[QueryTerm]) -> str:
    """Terms back into a query that parse_query reads as the same terms."""
    out = []
    for n, term in enumerate(terms):
        weight = abs(term.weight)
        body = shlex.quote(term.value) if term.kind == "image" else '"' + term.value.replace('"', "") + '"'
        body = body if weight == 1.0 else f"{weight:g}:{body}"
        out.append(("- " if term.weight < 0 else "" if n == 0 else "+ ") + body)
    return " ".join(out)


def _inside(position: int, spans: Iterable[tuple[int, int]]) -> bool:
    return any(a <= position < b for a, b in spans)


def _residue(text: str, removed: Sequence[tuple[int, int]]) -> str | None:
    """The query without the removed spans, tidied; None when no describing word is left."""
    if not removed:
        return text
    keep = []
    last = 0
    for a, b in sorted(removed):
        keep.append(text[last:a])
        last = max(last, b)
    keep.append(text[last:])
    rest = " ".join(" ".join(keep).split()).strip(" ,.;:-–·")
    if _HAN.search(rest):
        rest = _CHINESE_FILLER.sub("", rest.replace(" ", "")) if not re.search(r"[A-Za-z]", rest) else rest
    words = _WORD.findall(rest.lower())
    # leading/trailing connecting words left by a removed part: "dog on the beach in" -> "dog on the beach"
    tokens = rest.split()
    while tokens and tokens[-1].lower().strip(",.") in STOP_WORDS:
        tokens.pop()
    while tokens and tokens[0].lower().strip(",.") in STOP_WORDS - {"a", "an", "the", "my", "our", "some"}:
        tokens.pop(0)
    rest = " ".join(tokens).strip(" ,.;:-–·")
    words = _WORD.findall(rest.lower())
    if not words or all(w in STOP_WORDS or w in _GENERIC for w in words):
        if _HAN.search(rest) and rest:
            return rest
        return None
    return rest


def understand(
    query: str,
    places: Collection[str] = (),
    today: date | None = None,
    photo_words: WordLookup | None = None,
    name_words: WordLookup | None = None,
    ignore: Collection[str] = (),
) -> Understood:
    """`QueryPlanner(...).understand(query)` for one query (an engine keeps its planner)."""
    return QueryPlanner(places, photo_words, name_words, today).understand(query, ignore)


def read_language(understood: Understood) -> Understood:
    """`understood` with what its language path makes of the visual part: each Chinese text term
    with the English it is read as (`reading` too when the visual part is one term), the words
    neither the dictionary nor the training knows (in `not_understood`), the words read by their
    characters, and a note for a language not understood yet. English comes back as it was."""
    if not understood.visual:
        return understood
    from xmodal.indexer.models.chinese import understand as understand_language

    try:
        terms = [t.value for t in parse_query(understood.visual) if t.kind == "text"]
    except InvalidQueryError:
        terms = [understood.visual]
    read_as: list[tuple[str, str]] = []
    unknown: list[str] = []
    guessed: list[str] = []
    notes: list[str] = []
    for term in terms:
        language = understand_language(term)
        if language.note is not None:
            notes.append(language.note)
        elif language.language == "chinese":
            read_as.append((term, language.english or ""))
            unknown += [w for w in language.unknown_words if w not in unknown]
            guessed += [w for w in language.guessed_words if w not in guessed]
    if not (read_as or notes):
        return understood
    single = len(read_as) == 1 and read_as[0][0] == understood.visual
    return replace(
        understood,
        reading=read_as[0][1] if single else understood.reading,
        read_as=tuple(read_as),
        not_understood=(*understood.not_understood, *(w for w in unknown if w not in understood.not_understood)),
        guessed=tuple(guessed),
        note=" / ".join(dict.fromkeys(notes)) if notes else None,
    )


def read_literally(query: str) -> Understood:
    """A query searched as it is (literal, combined with a picture, texts as the target): nothing
    is read from it but its language (read_language)."""
    text = " ".join(query.split())
    return read_language(Understood(query=text, visual=text or None, literal=True))
