"""A small English phrase grammar that writes the exact German translation at the same time.

Every sentence is built from one structure (subject, verb, noun phrases, numbers...) rendered
twice, so the German is correct by construction: article and adjective endings agree in gender,
number and case (nominative, accusative, and dative after location prepositions), numerals are
written as German words (``einundzwanzig``), and the finite verb is second in statements with
a fronted adverb or location (``Heute sehe ich drei Hunde.``) and first in yes/no questions.

The English side is an ASR transcript: lower case except ``I`` and names, no punctuation,
numbers spelt out (``twenty-one``). The German side is written properly: capitalised nouns and
first word, final ``.`` or ``?``.

Sentence kinds (``Pair.kind``): ``transitive`` (I see twenty-one green birds), ``question``
(do you have a red pen), ``locative`` (the three red cups are on the table), ``there``
(there is a red ball under the bed), ``where`` (where is the small dog), ``predicative`` (the cup
is red / is the cup red), ``how_many`` (how many birds do you see), ``colour`` (what colour is
the ball), ``age`` (Tom is twenty-one years old / how old is the dog), ``arithmetic`` (three
plus four is seven).

The vocabulary is a few hundred words per language, small enough for a tiny model, while the
combinations give hundreds of thousands of distinct sentences. English determines German: the
generator raises if one English sentence ever received two translations (a grammar bug).
``generate_pairs`` samples unique pairs deterministically from a seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# ----------------------------------------------------------------------------- numbers


def _words(text: str) -> list[str]:
    return text.split()


_EN_ONES = _words(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
)
_EN_TENS = _words("_ _ twenty thirty forty fifty sixty seventy eighty ninety")
_DE_ONES = _words(
    "null eins zwei drei vier fünf sechs sieben acht neun zehn elf zwölf dreizehn vierzehn "
    "fünfzehn sechzehn siebzehn achtzehn neunzehn"
)
_DE_TENS = _words("_ _ zwanzig dreißig vierzig fünfzig sechzig siebzig achtzig neunzig")


def en_number(n: int) -> str:
    """0..99 as English words: ``21 -> "twenty-one"``."""
    if not 0 <= n <= 99:
        raise ValueError(f"numbers must be in 0..99, got {n}")
    if n < 20:
        return _EN_ONES[n]
    tens, ones = divmod(n, 10)
    return _EN_TENS[tens] + (f"-{_EN_ONES[ones]}" if ones else "")


def de_number(n: int) -> str:
    """0..99 as a German numeral standing alone: ``1 -> "eins"``, ``21 -> "einundzwanzig"``.

    (Before a noun, 1 is the declined article ``ein/eine/einen``; see ``noun_phrase``.)"""
    if not 0 <= n <= 99:
        raise ValueError(f"numbers must be in 0..99, got {n}")
    if n < 20:
        return _DE_ONES[n]
    tens, ones = divmod(n, 10)
    if not ones:
        return _DE_TENS[tens]
    unit = "ein" if ones == 1 else _DE_ONES[ones]  # einundzwanzig, not einsundzwanzig
    return f"{unit}und{_DE_TENS[tens]}"


# ----------------------------------------------------------------------------- lexicon

CASES = ("nom", "acc", "dat")


@dataclass(frozen=True)
class Noun:
    """A countable noun. ``gender`` is the German gender m/f/n; ``kind`` is obj/animal/person."""

    en: str
    en_pl: str
    de: str
    de_pl: str
    gender: str
    kind: str


@dataclass(frozen=True)
class Adj:
    """An adjective; German endings are appended to ``de`` (``rot`` -> ``roten``)."""

    en: str
    de: str
    kinds: frozenset[str]
    colour: bool = False


def _nouns(kind: str, rows: str) -> tuple[Noun, ...]:
    """One noun per line: ``en en_pl de de_pl gender`` (``_`` joins two-word English nouns)."""
    out = []
    for line in rows.strip().splitlines():
        en, en_pl, de, de_pl, gender = (w.replace("_", " ") for w in line.split())
        out.append(Noun(en, en_pl, de, de_pl, gender, kind))
    return tuple(out)


OBJECTS = _nouns(
    "obj",
    """
ball balls Ball Bälle m
cup cups Tasse Tassen f
book books Buch Bücher n
car cars Auto Autos n
apple apples Apfel Äpfel m
chair chairs Stuhl Stühle m
hat hats Hut Hüte m
key keys Schlüssel Schlüssel m
pen pens Stift Stifte m
lamp lamps Lampe Lampen f
box boxes Kiste Kisten f
flower flowers Blume Blumen f
bottle bottles Flasche Flaschen f
shoe shoes Schuh Schuhe m
egg eggs Ei Eier n
glass glasses Glas Gläser n
boat boats Boot Boote n
bag bags Tasche Taschen f
clock clocks Uhr Uhren f
spoon spoons Löffel Löffel m
coffee_cup coffee_cups Kaffeetasse Kaffeetassen f
flower_pot flower_pots Blumentopf Blumentöpfe m
door_key door_keys Türschlüssel Türschlüssel m
football footballs Fußball Fußbälle m
bird_house bird_houses Vogelhaus Vogelhäuser n
""",
)
ANIMALS = _nouns(
    "animal",
    """
dog dogs Hund Hunde m
cat cats Katze Katzen f
bird birds Vogel Vögel m
horse horses Pferd Pferde n
mouse mice Maus Mäuse f
cow cows Kuh Kühe f
duck ducks Ente Enten f
frog frogs Frosch Frösche m
""",
)
# No weak nouns (der Junge -> den Jungen) and no English plurals equal to the singular (fish),
# so nominative = accusative form and English number is always visible.
PEOPLE = _nouns(
    "person",
    """
man men Mann Männer m
woman women Frau Frauen f
child children Kind Kinder n
girl girls Mädchen Mädchen n
teacher teachers Lehrer Lehrer m
""",
)
NOUNS = OBJECTS + ANIMALS + PEOPLE
YEAR = Noun("year", "years", "Jahr", "Jahre", "n", "obj")

_ALL = frozenset({"obj", "animal", "person"})
_THINGS = frozenset({"obj", "animal"})
ADJECTIVES = (
    *(
        Adj(en, de, _THINGS, colour=True)
        for en, de in (
            ("red", "rot"),
            ("green", "grün"),
            ("blue", "blau"),
            ("yellow", "gelb"),
            ("black", "schwarz"),
            ("white", "weiß"),
            ("brown", "braun"),
        )
    ),
    Adj("big", "groß", _ALL),
    Adj("small", "klein", _ALL),
    Adj("old", "alt", _ALL),
    Adj("new", "neu", frozenset({"obj"})),
    Adj("beautiful", "schön", _ALL),
)
COLOURS = tuple(a for a in ADJECTIVES if a.colour)
SIZES = tuple(a for a in ADJECTIVES if not a.colour)


@dataclass(frozen=True)
class Place:
    """A location noun with the English prepositions that make sense with it."""

    noun: Noun
    preps: tuple[str, ...]


_PREPS = {"on": "auf", "under": "unter", "in": "in", "behind": "hinter", "next to": "neben"}
PLACES = tuple(
    Place(Noun(en, "-", de, "-", g, "obj"), tuple(p.replace("_", " ") for p in preps.split(",")))
    for en, de, g, preps in (
        ("table", "Tisch", "m", "on,under,next_to,behind"),
        ("bed", "Bett", "n", "on,under,next_to"),
        ("chair", "Stuhl", "m", "on,under,next_to"),
        ("box", "Kiste", "f", "in,on,next_to,behind"),
        ("garden", "Garten", "m", "in"),
        ("kitchen", "Küche", "f", "in"),
        ("house", "Haus", "n", "in,behind,next_to"),
        ("car", "Auto", "n", "in,behind,next_to"),
        ("door", "Tür", "f", "next_to,behind"),
        ("window", "Fenster", "n", "next_to,under"),
        ("sofa", "Sofa", "n", "on,under,behind"),
        ("tree", "Baum", "m", "under,behind,next_to"),
        ("shelf", "Regal", "n", "on,under,next_to"),
        ("floor", "Boden", "m", "on"),
    )
)

# Persons: 1sg 2sg 3sg 1pl 3pl ("you" is always the familiar singular "du").
PRONOUNS = (
    ("I", "ich", "1sg"),
    ("you", "du", "2sg"),
    ("he", "er", "3sg"),
    ("she", "sie", "3sg"),
    ("we", "wir", "1pl"),
    ("they", "sie", "3pl"),
)
NAMES = ("Anna", "Tom", "Lisa", "Paul")
_PERSON_INDEX = {"1sg": 0, "2sg": 1, "3sg": 2, "1pl": 3, "3pl": 4}


@dataclass(frozen=True)
class Verb:
    """A transitive verb: English base and 3sg, German present forms for 1sg 2sg 3sg 1pl 3pl;
    ``objects`` lists the noun kinds it takes, ``animal_subject`` whether animals can do it."""

    en: str
    en_3sg: str
    de: tuple[str, str, str, str, str]
    objects: frozenset[str]
    animal_subject: bool


def _verb(en: str, en_3sg: str, de: str, objects: frozenset[str], animal: bool) -> Verb:
    forms = tuple(de.split())
    assert len(forms) == 5, de
    return Verb(en, en_3sg, forms, objects, animal)  # type: ignore[arg-type]


VERBS = (
    _verb("see", "sees", "sehe siehst sieht sehen sehen", _ALL, True),
    _verb("have", "has", "habe hast hat haben haben", _THINGS, True),
    _verb("buy", "buys", "kaufe kaufst kauft kaufen kaufen", _THINGS, False),
    _verb("need", "needs", "brauche brauchst braucht brauchen brauchen", _ALL, False),
    _verb("find", "finds", "finde findest findet finden finden", _ALL, True),
    _verb("want", "wants", "will willst will wollen wollen", _THINGS, True),
    _verb("like", "likes", "mag magst mag mögen mögen", _ALL, True),
    _verb("carry", "carries", "trage trägst trägt tragen tragen", frozenset({"obj"}), False),
)
_BE_EN = ("am", "are", "is", "are", "are")
_BE_DE = ("bin", "bist", "ist", "sind", "sind")

# Fronted adverbs force verb-second order in German. "tomorrow" takes "will" in English only.
ADVERBS = (("today", "heute"), ("now", "jetzt"), ("every day", "jeden Tag"), ("tomorrow", "morgen"))

# ----------------------------------------------------------------------------- declension

_DEF = {
    "nom": {"m": "der", "f": "die", "n": "das", "pl": "die"},
    "acc": {"m": "den", "f": "die", "n": "das", "pl": "die"},
    "dat": {"m": "dem", "f": "der", "n": "dem", "pl": "den"},
}
_DIES = {  # dieser/diese/dieses: the same endings as the definite article
    "nom": {"m": "dieser", "f": "diese", "n": "dieses", "pl": "diese"},
    "acc": {"m": "diesen", "f": "diese", "n": "dieses", "pl": "diese"},
    "dat": {"m": "diesem", "f": "dieser", "n": "diesem", "pl": "diesen"},
}
_EIN_END = {  # ein/kein/mein/...: ein-word endings
    "nom": {"m": "", "f": "e", "n": "", "pl": "e"},
    "acc": {"m": "en", "f": "e", "n": "", "pl": "e"},
    "dat": {"m": "em", "f": "er", "n": "em", "pl": "en"},
}
# Adjective endings: weak after der-words (and after any inflected plural determiner),
# mixed after ein-words in the singular, strong with no determiner (plural after numerals).
_WEAK = {
    "nom": {"m": "e", "f": "e", "n": "e", "pl": "en"},
    "acc": {"m": "en", "f": "e", "n": "e", "pl": "en"},
    "dat": {"m": "en", "f": "en", "n": "en", "pl": "en"},
}
_MIXED = {
    "nom": {"m": "er", "f": "e", "n": "es"},
    "acc": {"m": "en", "f": "e", "n": "es"},
    "dat": {"m": "en", "f": "en", "n": "en"},
}
_STRONG_PL = {"nom": "e", "acc": "e", "dat": "en"}

POSSESSIVES = (
    ("my", "mein"),
    ("your", "dein"),
    ("his", "sein"),
    ("her", "ihr"),
    ("our", "unser"),
    ("their", "ihr"),
)


@dataclass(frozen=True)
class Det:
    """A determiner. ``type``: the, this, a, no, poss, num, many, some; ``number`` for num (and
    with the/this/poss for "the three ..."); ``poss`` the (English, German) possessive."""

    type: str
    number: int | None = None
    poss: tuple[str, str] | None = None

    @property
    def plural(self) -> bool | None:
        """True/False when the determiner fixes the number, None when either is allowed."""
        if self.number is not None:
            return self.number != 1
        if self.type in ("many", "some"):
            return True
        if self.type == "a":
            return False
        return None


def _an(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"  # no "u"-as-"you" words in this lexicon


def noun_phrase(
    det: Det, noun: Noun, adjs: tuple[Adj, ...], plural: bool, case: str
) -> tuple[str, str]:
    """(English, German) for ``det adjs noun`` in German ``case`` (nom/acc/dat).

    Examples: ``Det("the", 3)``, red, cup, plural, nom -> ("the three red cups",
    "die drei roten Tassen"); ``Det("a")``, red, ball, acc -> ("a red ball", "einen roten Ball").
    """
    if case not in CASES:
        raise ValueError(f"case must be one of {CASES}, got {case!r}")
    if det.plural is not None and det.plural != plural:
        raise ValueError(f"determiner {det} does not agree with plural={plural}")
    if plural and case == "dat":
        raise ValueError("dative plural nouns (-n) are not in this grammar")
    g = "pl" if plural else noun.gender
    en_noun, de_noun = (noun.en_pl, noun.de_pl) if plural else (noun.en, noun.de)
    en_adjs = [a.en for a in adjs]
    num_en = [en_number(det.number)] if det.number is not None and det.number != 1 else []
    num_de = [de_number(det.number)] if det.number is not None and det.number != 1 else []

    if det.type in ("the", "this"):
        art = (_DEF if det.type == "the" else _DIES)[case][g]
        this = "these" if plural else "this"
        en_det, de_det, ending = ["the" if det.type == "the" else this], [art], _WEAK[case][g]
    elif det.type in ("a", "no", "poss") or (det.type == "num" and det.number == 1):
        if det.type == "poss":
            assert det.poss is not None
            en_first, stem = det.poss
        elif det.type == "no":
            en_first, stem = "no", "kein"
        else:  # a / one
            en_first = "one" if det.type == "num" else _an((en_adjs or [en_noun])[0])
            stem = "ein"
        en_det, de_det = [en_first], [stem + _EIN_END[case][g]]
        ending = _WEAK[case][g] if plural else _MIXED[case][g]
    elif det.type in ("num", "many", "some"):
        en_det = num_en if det.type == "num" else [det.type]
        de_det = num_de if det.type == "num" else ["viele" if det.type == "many" else "einige"]
        ending = _STRONG_PL[case]
        num_en, num_de = [], []
    else:
        raise ValueError(f"unknown determiner type {det.type!r}")
    en = [*en_det, *num_en, *en_adjs, en_noun]
    de = [*de_det, *num_de, *(a.de + ending for a in adjs), de_noun]
    return " ".join(en), " ".join(de)


# ----------------------------------------------------------------------------- sentences

Phrase = tuple[str, str]  # (English, German) of a noun phrase or location
Subject = tuple[str, str, str]  # (English, German, person: 1sg 2sg 3sg 1pl 3pl)


@dataclass(frozen=True)
class Pair:
    """One English sentence (ASR transcript style), its German translation and its kind."""

    en: str
    de: str
    kind: str


def _finish(kind: str, en: list[str], de: list[str], question: bool = False) -> Pair:
    de_text = " ".join(de)
    return Pair(" ".join(en), de_text[0].upper() + de_text[1:] + ("?" if question else "."), kind)


def place_phrase(prep: str, noun: Noun, adjs: tuple[Adj, ...] = ()) -> Phrase:
    """A location with the German dative: ("on the big table", "auf dem großen Tisch")."""
    if prep not in _PREPS:
        raise ValueError(f"unknown preposition {prep!r}; known: {', '.join(_PREPS)}")
    en, de = noun_phrase(Det("the"), noun, adjs, False, "dat")
    de_prep = _PREPS[prep]
    if de_prep == "in" and de.startswith("dem "):
        return f"{prep} {en}", "im" + de[3:]  # in dem -> im
    return f"{prep} {en}", f"{de_prep} {de}"


def noun_subject(np: Phrase, plural: bool) -> Subject:
    """A nominative noun phrase as a third-person subject."""
    return np[0], np[1], "3pl" if plural else "3sg"


def _be(person: str) -> tuple[str, str]:
    i = _PERSON_INDEX[person]
    return _BE_EN[i], _BE_DE[i]


def render_transitive(
    subj: Subject,
    verb: Verb,
    obj: Phrase,
    place: Phrase | None = None,
    adverb: tuple[str, str] | None = None,
) -> Pair:
    """``[adverb] subject verb object [place]``; a fronted adverb puts the German verb second
    ("Heute sehe ich ..."); "tomorrow" takes "will" in English."""
    s_en, s_de, person = subj
    v_de = verb.de[_PERSON_INDEX[person]]
    v_en = verb.en_3sg if person == "3sg" else verb.en
    tail_en = [obj[0]] + ([place[0]] if place else [])
    tail_de = [obj[1]] + ([place[1]] if place else [])
    if adverb is None:
        return _finish("transitive", [s_en, v_en, *tail_en], [s_de, v_de, *tail_de])
    en_v = ["will", verb.en] if adverb[0] == "tomorrow" else [v_en]
    return _finish(
        "transitive", [adverb[0], s_en, *en_v, *tail_en], [adverb[1], v_de, s_de, *tail_de]
    )


def render_question(subj: Subject, verb: Verb, obj: Phrase) -> Pair:
    """Yes/no question: do-support in English, verb first in German."""
    s_en, s_de, person = subj
    do = "does" if person == "3sg" else "do"
    return _finish(
        "question",
        [do, s_en, verb.en, obj[0]],
        [verb.de[_PERSON_INDEX[person]], s_de, obj[1]],
        question=True,
    )


def render_locative(subj: Subject, place: Phrase, adverb: tuple[str, str] | None = None) -> Pair:
    """``[adverb] subject is/are place`` ("the three red cups are on the table")."""
    be_en, be_de = _be(subj[2])
    if adverb is None:
        return _finish("locative", [subj[0], be_en, place[0]], [subj[1], be_de, place[1]])
    return _finish(
        "locative", [adverb[0], subj[0], be_en, place[0]], [adverb[1], be_de, subj[1], place[1]]
    )


def render_there(subj: Subject, place: Phrase) -> Pair:
    """ "there is a red ball under the bed" -> "Unter dem Bett ist ein roter Ball." (V2)."""
    be_en, be_de = _be(subj[2])
    return _finish("there", ["there", be_en, subj[0], place[0]], [place[1], be_de, subj[1]])


def render_where(subj: Subject) -> Pair:
    be_en, be_de = _be(subj[2])
    return _finish("where", ["where", be_en, subj[0]], ["wo", be_de, subj[1]], question=True)


def render_predicative(subj: Subject, adj: Adj, question: bool = False) -> Pair:
    """ "the cup is red" / "is the cup red" (German predicative adjectives are uninflected)."""
    be_en, be_de = _be(subj[2])
    if question:
        return _finish("predicative", [be_en, subj[0], adj.en], [be_de, subj[1], adj.de], True)
    return _finish("predicative", [subj[0], be_en, adj.en], [subj[1], be_de, adj.de])


def render_how_many(subj: Subject, verb: Verb, noun: Noun, adjs: tuple[Adj, ...] = ()) -> Pair:
    """ "how many red cups do you have" -> "Wie viele rote Tassen hast du?" (strong endings)."""
    s_en, s_de, person = subj
    o_en = " ".join([*(a.en for a in adjs), noun.en_pl])
    o_de = " ".join([*(a.de + _STRONG_PL["acc"] for a in adjs), noun.de_pl])
    do = "does" if person == "3sg" else "do"
    return _finish(
        "how_many",
        ["how", "many", o_en, do, s_en, verb.en],
        ["wie", "viele", o_de, verb.de[_PERSON_INDEX[person]], s_de],
        question=True,
    )


def render_colour(subj: Subject) -> Pair:
    """ "what colour is the ball" -> "Welche Farbe hat der Ball?"."""
    plural = subj[2] == "3pl"
    return _finish(
        "colour",
        ["what", "colour", "are" if plural else "is", subj[0]],
        ["welche", "Farbe", "haben" if plural else "hat", subj[1]],
        question=True,
    )


def render_age(subj: Subject, years: int | None) -> Pair:
    """ "Tom is twenty-one years old" (``years`` 1..99), or "how old is Tom" (``years=None``)."""
    be_en, be_de = _be(subj[2])
    if years is None:
        return _finish("age", ["how", "old", be_en, subj[0]], ["wie", "alt", be_de, subj[1]], True)
    if not 1 <= years <= 99:
        raise ValueError(f"years must be in 1..99, got {years}")
    y_en, y_de = noun_phrase(Det("num", years), YEAR, (), years != 1, "acc")  # ein Jahr
    return _finish("age", [subj[0], be_en, y_en, "old"], [subj[1], be_de, y_de, "alt"])


_OPS = {"plus": "plus", "minus": "minus", "times": "mal"}


def render_arithmetic(a: int, op: str, b: int) -> Pair:
    """ "three plus four is seven" -> "Drei plus vier ist sieben." (result must be 0..99)."""
    if op not in _OPS:
        raise ValueError(f"unknown operator {op!r}; known: {', '.join(_OPS)}")
    c = a + b if op == "plus" else a - b if op == "minus" else a * b
    return _finish(
        "arithmetic",
        [en_number(a), op, en_number(b), "is", en_number(c)],
        [de_number(a), _OPS[op], de_number(b), "ist", de_number(c)],
    )


# --- random choices -------------------------------------------------------------------


def _pick_number(rng: random.Random) -> int:
    # Small counts are the common case; the rest of 2..99 keeps compound numerals frequent.
    return rng.randint(2, 12) if rng.random() < 0.5 else rng.randint(13, 99)


def _pick_adjs(rng: random.Random, noun: Noun, max_n: int = 2) -> tuple[Adj, ...]:
    """None, one, or a size + colour pair (English and German share that order)."""
    r = rng.random()
    sizes = [a for a in SIZES if noun.kind in a.kinds]
    colours = [a for a in COLOURS if noun.kind in a.kinds]
    if r < 0.35 or max_n == 0:
        return ()
    if r < 0.8 or max_n == 1 or not colours:
        return (rng.choice(sizes + colours),)
    return (rng.choice(sizes), rng.choice(colours))


def _poss_number(rng: random.Random, plural: bool) -> int | None:
    """Sometimes "the three dogs" / "my two cats" instead of a bare plural."""
    return rng.randint(2, 20) if plural and rng.random() < 0.3 else None


def _pick_det(rng: random.Random, allowed: Iterable[str], plural: bool) -> Det:
    """A determiner of one of the ``allowed`` types that fits ``plural``."""
    sg_only, pl_only = {"a"}, {"many", "some"}
    options = [t for t in allowed if t not in (sg_only if plural else pl_only)]
    if not plural and "num" in options and rng.random() < 0.85:
        options.remove("num")  # "one dog" is rare next to "a dog"
    t = rng.choice(options)
    if t == "num":
        return Det("num", _pick_number(rng) if plural else 1)
    if t == "poss":
        return Det("poss", _poss_number(rng, plural), rng.choice(POSSESSIVES))
    if t in ("the", "this"):
        return Det(t, _poss_number(rng, plural))
    return Det(t)


def _np(
    rng: random.Random,
    nouns: tuple[Noun, ...],
    dets: Iterable[str],
    case: str,
    plural: bool | None = None,
    max_adjs: int = 2,
) -> tuple[Phrase, bool]:
    """A random noun phrase and whether it is plural."""
    noun = rng.choice(nouns)
    if plural is None:
        plural = rng.random() < 0.45
    det = _pick_det(rng, dets, plural)
    return noun_phrase(det, noun, _pick_adjs(rng, noun, max_adjs), plural, case), plural


_PLACE_ADJS = tuple(
    a
    for a in ADJECTIVES
    if a.en in ("big", "small", "old", "red", "blue", "green", "black", "white")
)


def _place(rng: random.Random) -> Phrase:
    place = rng.choice(PLACES)
    adjs = () if rng.random() < 0.7 else (rng.choice(_PLACE_ADJS),)
    return place_phrase(rng.choice(place.preps), place.noun, adjs)


_SUBJ_DETS = ("the", "this", "poss", "a", "num")
_DEF_DETS = ("the", "this", "poss")
_OBJ_DETS = ("the", "this", "poss", "a", "no", "num", "many", "some")


def _subject(rng: random.Random, verb: Verb | None = None) -> Subject:
    """A pronoun, a name or an animate noun phrase (people only when animals cannot ``verb``)."""
    r = rng.random()
    if r < 0.5:
        return rng.choice(PRONOUNS)
    if r < 0.65:
        name = rng.choice(NAMES)
        return name, name, "3sg"
    nouns = PEOPLE + ANIMALS if verb is None or verb.animal_subject else PEOPLE
    return noun_subject(*_np(rng, nouns, _SUBJ_DETS, "nom", max_adjs=1))


def _object(rng: random.Random, verb: Verb, dets: Iterable[str] = _OBJ_DETS) -> Phrase:
    nouns = tuple(n for n in NOUNS if n.kind in verb.objects)
    return _np(rng, nouns, dets, "acc")[0]


def _transitive(rng: random.Random) -> Pair:
    verb = rng.choice(VERBS)
    subj, obj = _subject(rng, verb), _object(rng, verb)
    place = _place(rng) if rng.random() < 0.25 else None
    adverb = rng.choice(ADVERBS) if rng.random() < 0.3 else None
    return render_transitive(subj, verb, obj, place, adverb)


def _question(rng: random.Random) -> Pair:
    verb = rng.choice(VERBS)
    subj = _subject(rng, verb)
    return render_question(subj, verb, _object(rng, verb, [d for d in _OBJ_DETS if d != "no"]))


def _locative(rng: random.Random) -> Pair:
    subj = noun_subject(*_np(rng, NOUNS, _SUBJ_DETS, "nom"))
    # "tomorrow ... is" reads oddly in English without "will be"
    adverb = rng.choice(ADVERBS[:3]) if rng.random() < 0.25 else None
    return render_locative(subj, _place(rng), adverb)


def _there(rng: random.Random) -> Pair:
    subj = noun_subject(*_np(rng, NOUNS, ("a", "no", "num", "many", "some"), "nom"))
    return render_there(subj, _place(rng))


def _where(rng: random.Random) -> Pair:
    return render_where(noun_subject(*_np(rng, NOUNS, _DEF_DETS, "nom")))


def _predicative(rng: random.Random) -> Pair:
    noun = rng.choice(NOUNS)
    adj = rng.choice([a for a in ADJECTIVES if noun.kind in a.kinds])
    plural = rng.random() < 0.4
    subj = noun_subject(
        noun_phrase(_pick_det(rng, _DEF_DETS, plural), noun, (), plural, "nom"), plural
    )
    return render_predicative(subj, adj, question=rng.random() < 0.3)


def _how_many(rng: random.Random) -> Pair:
    verb = rng.choice(VERBS)
    subj = _subject(rng, verb)
    noun = rng.choice(tuple(n for n in NOUNS if n.kind in verb.objects))
    return render_how_many(subj, verb, noun, _pick_adjs(rng, noun, 1))


def _colour(rng: random.Random) -> Pair:
    things = tuple(n for n in NOUNS if n.kind != "person")
    return render_colour(noun_subject(*_np(rng, things, _DEF_DETS, "nom", max_adjs=0)))


def _age(rng: random.Random) -> Pair:
    r = rng.random()
    if r < 0.4:
        subj = rng.choice(PRONOUNS)
    elif r < 0.7:
        name = rng.choice(NAMES)
        subj = (name, name, "3sg")
    else:
        np, _ = _np(rng, PEOPLE + ANIMALS, _DEF_DETS, "nom", plural=False, max_adjs=1)
        subj = noun_subject(np, False)
    return render_age(subj, None if rng.random() < 0.2 else rng.randint(1, 99))


def _arithmetic(rng: random.Random) -> Pair:
    op = rng.choice(tuple(_OPS))
    if op == "plus":
        a = rng.randint(0, 99)
        b = rng.randint(0, 99 - a)
    elif op == "minus":
        a = rng.randint(0, 99)
        b = rng.randint(0, a)
    else:
        a = rng.randint(0, 12)
        b = rng.randint(0, 99 // max(a, 1))
    return render_arithmetic(a, op, b)


KINDS: dict[str, tuple[float, Callable[[random.Random], Pair]]] = {
    "transitive": (0.28, _transitive),
    "question": (0.08, _question),
    "locative": (0.14, _locative),
    "there": (0.1, _there),
    "where": (0.07, _where),
    "predicative": (0.07, _predicative),
    "how_many": (0.07, _how_many),
    "colour": (0.04, _colour),
    "age": (0.08, _age),
    "arithmetic": (0.07, _arithmetic),
}


def sample_pair(rng: random.Random, kinds: Iterable[str] | None = None) -> Pair:
    """One random sentence pair (kinds drawn by their weights, or from ``kinds`` only)."""
    names = list(KINDS) if kinds is None else list(kinds)
    for name in names:
        if name not in KINDS:
            raise ValueError(f"unknown sentence kind {name!r}; known: {', '.join(KINDS)}")
    name = rng.choices(names, weights=[KINDS[n][0] for n in names])[0]
    return KINDS[name][1](rng)


def generate_pairs(
    n: int,
    seed: int = 0,
    exclude: Iterable[str] = (),
    kinds: Iterable[str] | None = None,
    max_tries_per_pair: int = 50,
) -> list[Pair]:
    """``n`` pairs with distinct English sentences, deterministic for a given ``seed``.

    Sentences whose English is in ``exclude`` are skipped. Raises ValueError when the grammar
    cannot supply ``n`` new sentences within ``max_tries_per_pair * n`` draws, and RuntimeError
    if one English sentence ever got two German translations (a bug in the grammar)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    kinds = None if kinds is None else list(kinds)
    seen = set(exclude)
    german: dict[str, str] = {}
    out: list[Pair] = []
    budget = max_tries_per_pair * n + 100
    while len(out) < n:
        if budget == 0:
            raise ValueError(
                f"only {len(out)} of {n} distinct sentences found (kinds={kinds}); the grammar "
                "is too small for this request"
            )
        budget -= 1
        pair = sample_pair(rng, kinds)
        if german.setdefault(pair.en, pair.de) != pair.de:
            raise RuntimeError(f"grammar bug: {pair.en!r} -> {german[pair.en]!r} and {pair.de!r}")
        if pair.en in seen:
            continue
        seen.add(pair.en)
        out.append(pair)
    return out
