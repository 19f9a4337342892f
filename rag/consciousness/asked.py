"""What a factoid question asks for: the kind of answer (a number, a date, a person, a place, a thing ...), and
for a number the measure it wants ("how long": a duration or a length; "how many grams": mass), with the word
lists both sides read (months, number words, units). The extractor (`rag.consciousness.extract`) finds the
phrase of a sentence that answers it."""

from __future__ import annotations

import re

from rag.consciousness.calibration import stem

NUMBER = re.compile(r"^\d[\d,.]*$")
NUMBER_WORDS = frozenset(
    "one two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty hundred "
    "thousand million half dozen first second third".split()
)
COLOURS = frozenset(
    "red orange yellow green blue purple violet pink brown black white grey gray silver gold golden navy maroon "
    "turquoise cream beige crimson scarlet".split()
)
DAYTIME = frozenset("morning mornings afternoon afternoons evening evenings night nights".split())
MONTHS = frozenset(
    "january february march april may june july august september october november december monday tuesday "
    "wednesday thursday friday saturday sunday spring summer autumn winter mondays tuesdays wednesdays thursdays "
    "fridays saturdays sundays".split()
)
WIDTH = 5  # words meet on their first five letters: "insured" and "insurance", "services" and "serviced"
ORDINALS = frozenset({"first", "second", "third"})
AUXILIARY = "(?:am|is|are|was|were|do|does|did|has|have|had|can|could|will|would|should)"  # "which N is ..."
THE = r"(?:(?:is|are|was|were) (?:the |its |their |my |your |our )?)?"  # "what is the mortgage rate"
PRICED = r"^what (is|are|was|were) .*\b(price|cost|costs|fee|fees)\b"  # "what is the broadband's monthly price"


def kind_of(question: str) -> str | None:
    """The kind of answer a question asks for: number, time, date, colour, person, place, thing, reason (why),
    manner (how does X ...); None when it asks for a procedure or an explanation (no phrase answers it)."""
    q = " ".join(question.lower().split())
    q = re.sub(
        r"^(for|into|in|at|on|to|by|from|since|until|of|with|between|after|before) (?=how|what|which|when)", "", q
    )
    if re.match(r"^(how (many|much|long|far|old|often|big|tall|high|wide|deep|heavy|fast|large|soon|late))\b", q):
        return "number"
    if re.match(rf"^what {THE}(\w+ )?(size|altitude|height|temperature|length|distance|age|price|weight|speed|"
                r"percentage|pressure|rate)\b", q):  # fmt: skip
        return "number"
    if re.match(PRICED, q):
        return "number"
    if re.match(r"^what (is|are|was|were) .*\b(birthday|birthdays|anniversary|deadline)\W*$", q):
        return "date"
    if re.match(r"^(what|which) colou?rs?\b", q):
        return "colour"
    if re.match(r"^(what|which) (time|hour)\b", q):
        return "time"
    if re.match(r"^(when|(what|which) (year|date|day|month|century|season))\b", q):
        return "date"
    if re.match(r"^(who|whom|whose)\b", q) or re.match(r"^what (is|are|was|were) .+ (called|named)\W*$", q):
        return "person"  # "what are Anna's children called": a name
    if re.match(
        r"^(where|(what|which) (city|town|country|place|mountain|river|street|station|stations|room|hall))\b", q
    ):
        return "place"
    if re.match(r"^why\b", q):
        return "reason"
    if re.match(r"^how (do|does|did|is|are|was|were|can|could) (?!i |you |we )", q):
        return "manner"
    if re.match(r"^(how|why|explain|describe|summari[sz]e|tell me|can|could|should|is|are|do|does)\b", q):
        return None
    if re.match(r"^(what|which|name|at what|to what|from what|for what|in what|on what|with what)\b", q):
        return "thing"
    return None


def key(word: str) -> str:
    """A word as the question and the sentence meet on it: lower-cased, lightly stemmed, its first `WIDTH` letters."""
    w = stem(word.lower().strip(".'’"))
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        w = w[:-1]
    return w.rstrip("e")[:WIDTH]


def is_number(w: str) -> bool:
    """A count or a quantity: digits ("2,000", "1.2-metre") or a number word ("five", "five-year"), no ordinal."""
    lw = w.lower().strip(".")
    first = lw.split("-", 1)[0]  # "1.2-metre", "five-year"; not "second-hand"
    return bool(NUMBER.match(lw) or NUMBER.match(first)) or lw in NUMBER_WORDS or first in NUMBER_WORDS - ORDINALS


# What a quantity measures, by its unit word: a question asking how long wants a duration or a length, not a mass.
MEASURES = {
    "duration": "second seconds minute minutes hour hours day days night nights week weeks fortnight month months "
    "year years decade decades century centuries",
    "length": "metre metres meter meters kilometre kilometres km centimetre centimetres cm millimetre millimetres mm "
    "mile miles foot feet inch inches yard yards",
    "mass": "gram grams g kilogram kilograms kg ounce ounces oz tonne tonnes",
    "volume": "litre litres liter liters millilitre millilitres ml cup cups tablespoon tablespoons teaspoon "
    "teaspoons pint pints gallon gallons",
    "temperature": "degree degrees celsius fahrenheit",
    "money": "dollar dollars euro euros pound pounds pence penny cent cents",
    "percent": "percent",
    "speed": "mph kph knots mbps gbps",
    "data": "kb mb gb tb",
    "pressure": "psi bar bars kpa",
    "clock": "am pm",
}
MEASURE_OF = {w: m for m, words in MEASURES.items() for w in words.split()}
UNITS = frozenset(MEASURE_OF) | {"times"}  # words that may follow a number as part of its quantity
ASKS_MEASURE = [  # (question pattern, the measures that answer it)
    (r"^how (long|soon|late)\b", {"duration", "length"}),
    (r"^how far ahead\b|^how far in advance\b", {"duration"}),
    (r"^how far\b", {"length", "duration"}),
    (rf"^how old\b|^what {THE}age\b", {"duration"}),
    (r"^how often\b", {"duration", "length"}),  # "every ten days", "every 300 miles"
    (rf"^how (big|tall|high|wide|deep|large)\b|^what {THE}(size|altitude|height|length|distance)\b", {"length"}),
    (rf"^how heavy\b|^what {THE}weight\b", {"mass"}),
    (r"^how fast\b|^what speed\b|^how quickly\b", {"speed", "duration"}),  # "ran the marathon in 2 hours"
    (rf"^what {THE}temperature\b", {"temperature"}),
    (rf"^what {THE}(\w+ )?pressure\b", {"pressure"}),
    (r"^what price\b|^how much (does|do|did|is|are|was|were) .*\b(cost|charge|pay|fee|price|subscription)", {"money"}),
    (r"^how much\b.*\b(cost|costs|charge|charged|pay|paid|fee|price|worth|money)\b", {"money"}),
    (PRICED, {"money"}),
    (rf"^what percentage\b|^what {THE}(\w+ )?rate\b", {"percent"}),
    (r"^how much data\b", {"data"}),
    (r"^how much\b", {"mass", "volume", "money"}),
]


def asks_phrase(question: str) -> bool:
    """Whether a phrase answers the question (who, when, how many, which ...), not a reason, a means or an
    explanation."""
    return kind_of(question) not in (None, "reason", "manner")


def asked_measure(question: str) -> tuple[set[str] | None, str | None, str | None]:
    """What a number question measures (durations, lengths, ...), for "how many N" the counted noun N's key, and
    the unit it names ("how many grams"); None for what the question does not say."""
    q = " ".join(question.lower().split())
    q = re.sub(r"^(for|into|in|at|on|to|by|from|of|with|after|before) (?=how|what)", "", q)
    m = re.match(r"^(?:how many|what number of) ([a-z]+)", q)
    if m:
        unit = MEASURE_OF.get(m.group(1))
        return ({unit}, None, m.group(1)) if unit else (None, key(m.group(1)), None)
    for pattern, wanted in ASKS_MEASURE:
        if re.match(pattern, q):
            return set(wanted), None, None
    return None, None, None


def measure_agreement(words: list[str], after: list[str], wanted: set[str] | None, noun: str | None) -> float:
    """+1 when a quantity measures what the question asks (its unit, or the counted noun right after it), -1 when
    its unit measures something else, 0 when it cannot be told."""
    lower = [w.lower().strip(".") for w in words]
    units = set()
    for w in lower:
        units.add(MEASURE_OF.get(w))
        if "-" in w:
            units.add(MEASURE_OF.get(w.split("-", 1)[1]))
    units.discard(None)
    if noun is not None:
        near = [key(w) for w in (lower + [a.lower() for a in after[:3]])]
        return 1.0 if noun in near else (-1.0 if units else 0.0)
    if wanted is None:
        return 0.0
    if units & wanted or ("speed" in wanted and units == {"length"} and {"hour", "per"} & {a.lower() for a in after}):
        return 1.0  # "60 miles an hour"
    return -1.0 if units else 0.0
