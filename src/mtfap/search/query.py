"""The face search language: ``old man wearing glasses`` -> ``~Young & Male & Eyeglasses``.

A query is a list of conditions on attributes, all of which must hold (AND). It is written in
words, in the explicit form, or in a mix of both:

- words and phrases with synonyms (``old``, ``elderly`` -> not ``Young``; ``glasses``,
  ``spectacles`` -> ``Eyeglasses``); each attribute is also reached by its own name, in any case,
  with underscores, spaces or nothing between its words (``Wearing_Hat``, ``wearing hat``,
  ``WearingHat``); :func:`vocabulary` is the table;
- negations: ``not``, ``no``, ``without``, ``non-`` and the operators ``~``, ``!``, ``-`` turn
  the next attribute phrase around, skipping filler words (``without a hat``); two negations
  cancel;
- filler words (``a``, ``the``, ``with``, ``wearing``, ``photo``, ``person``, ...) are skipped;
  ``and``, ``&`` and ``,`` only separate conditions.

Unknown words, contradictions (``man woman``), a dangling negation, ``or`` and parentheses are
errors with a one-line message that says what to write instead.

A query scores a face by the joint log-probability of its conditions under the model's
predicted probabilities, treating attributes as independent (:meth:`Query.log_score`).

:func:`vocabulary_markdown` writes the vocabulary table of docs/SEARCH.md.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from mtfap.attributes import CELEBA_ATTRIBUTES
from mtfap.errors import closest_name

# Probabilities are clipped to [EPS, 1 - EPS] before the log: one confident prediction then
# costs at most log(1e-6) ~ -13.8 instead of -inf, so a face failing one condition still ranks
# above one failing two.
EPS = 1e-6

# attribute -> (words that ask for it, words that ask for its absence). Each attribute's own name
# is added by `vocabulary`; the explicit form never needs an entry here.
SYNONYMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "5_o_Clock_Shadow": (("5 o clock shadow", "five o clock shadow", "stubble", "stubbly"), ()),
    "Arched_Eyebrows": (("arched eyebrows", "arched brows"), ()),
    "Attractive": (("attractive", "good looking", "handsome", "beautiful"), ("unattractive",)),
    "Bags_Under_Eyes": (("bags under eyes", "bags under the eyes", "eye bags"), ()),
    "Bald": (("bald",), ()),
    "Bangs": (("bangs", "fringe"), ()),
    "Big_Lips": (("big lips", "full lips", "thick lips"), ()),
    "Big_Nose": (("big nose", "large nose"), ()),
    "Black_Hair": (("black hair", "black haired"), ()),
    "Blond_Hair": (("blond", "blonde", "blond hair", "blonde hair", "blond haired",
                    "blonde haired"), ()),
    "Blurry": (("blurry", "blurred", "out of focus"), ("sharp",)),
    "Brown_Hair": (("brown hair", "brown haired", "brunette"), ()),
    "Bushy_Eyebrows": (("bushy eyebrows", "bushy brows", "thick eyebrows"), ()),
    "Chubby": (("chubby", "plump"), ()),
    "Double_Chin": (("double chin",), ()),
    "Eyeglasses": (("glasses", "spectacles", "eyeglasses", "bespectacled"), ()),
    "Goatee": (("goatee",), ()),
    "Gray_Hair": (("gray hair", "grey hair", "white hair", "silver hair", "gray", "grey",
                   "gray haired", "grey haired", "white haired"), ()),
    "Heavy_Makeup": (("makeup", "make up", "heavy makeup", "heavy make up"), ()),
    "High_Cheekbones": (("high cheekbones", "high cheek bones"), ()),
    "Male": (("man", "men", "male", "males", "guy", "guys", "boy", "boys", "gentleman",
              "gentlemen"),
             ("woman", "women", "female", "females", "lady", "ladies", "girl", "girls")),
    "Mouth_Slightly_Open": (("mouth open", "open mouth", "open mouthed"), ("mouth closed",
                                                                           "closed mouth")),
    "Mustache": (("mustache", "moustache", "mustached", "moustached"), ()),
    "Narrow_Eyes": (("narrow eyes", "narrow eyed", "squinting"), ()),
    "No_Beard": (("clean shaven", "beardless", "shaven"), ("beard", "bearded", "beards")),
    "Oval_Face": (("oval face", "oval faced"), ()),
    "Pale_Skin": (("pale skin", "pale skinned", "pale"), ()),
    "Pointy_Nose": (("pointy nose", "pointed nose"), ()),
    "Receding_Hairline": (("receding hairline", "receding hair", "balding"), ()),
    "Rosy_Cheeks": (("rosy cheeks", "rosy cheeked"), ()),
    "Sideburns": (("sideburns", "side burns"), ()),
    "Smiling": (("smiling", "smile", "smiles", "smiley"), ()),
    "Straight_Hair": (("straight hair", "straight haired"), ()),
    "Wavy_Hair": (("wavy hair", "wavy haired", "wavy", "curly hair", "curly"), ()),
    "Wearing_Earrings": (("earrings", "earring"), ()),
    "Wearing_Hat": (("hat", "hats", "cap", "caps"), ()),
    "Wearing_Lipstick": (("lipstick",), ()),
    "Wearing_Necklace": (("necklace",), ()),
    "Wearing_Necktie": (("necktie", "tie", "neck tie"), ()),
    "Young": (("young", "youthful", "younger"), ("old", "elderly", "senior", "aged", "older")),
}

NEGATIONS = ("not", "no", "without", "non", "never", "isn t", "aren t", "doesn t", "don t",
             "hasn t")
STOP_WORDS = (
    "a", "an", "the", "with", "wearing", "wears", "wear", "who", "whose", "that", "which", "is",
    "are", "was", "be", "has", "have", "having", "had", "of", "in", "on", "at", "to", "for", "by",
    "photo", "photos", "picture", "pictures", "image", "images", "face", "faces", "person",
    "persons", "people", "showing", "shows", "show", "me", "find", "someone", "somebody", "one",
    "his", "her", "their", "some", "very", "looking", "all", "any",
)
AND_WORDS = ("and",)
OR_WORDS = ("or",)

# one scan of the raw text: runs of letters/digits, or any single other visible character
_TOKEN = re.compile(r"[^\W_]+|\S")
# skipped: joiners inside a word (5_o_Clock_Shadow, o'clock, clean-shaven) and quotes
_SKIPPED = "_'’-\""


@dataclass(frozen=True)
class Term:
    """One row of the vocabulary: ``phrase`` (lower case, words separated by one space) asks for
    ``attribute`` to be present (``present=True``) or absent."""

    phrase: str
    attribute: str
    present: bool


@dataclass(frozen=True)
class Condition:
    """``attribute`` must be ``present`` (or absent); ``words`` is the part of the query that
    asked for it, as typed (``"without glasses"``, ``"~Young"``)."""

    attribute: str
    present: bool
    words: str = ""

    def __str__(self) -> str:
        return self.attribute if self.present else f"~{self.attribute}"


@dataclass(frozen=True)
class Query:
    """A conjunction of :class:`Condition` on attributes; build one with :func:`parse_query`.

    ``str(query)`` is the explicit form (``~Young & Male & Eyeglasses``), which parses back to
    the same conditions.
    """

    conditions: tuple[Condition, ...]

    def __str__(self) -> str:
        return " & ".join(str(c) for c in self.conditions)

    def as_dict(self) -> dict[str, bool]:
        """``{attribute: present}`` in the order of the query."""
        return {c.attribute: c.present for c in self.conditions}

    def log_score(self, probabilities, attributes) -> np.ndarray:
        """Joint log-probability of the conditions for each face.

        .. math:: s_i = \\sum_{c \\in \\text{present}} \\log p_{i,c}
                       + \\sum_{c \\in \\text{absent}} \\log (1 - p_{i,c}),

        with :math:`p` clipped to ``[1e-6, 1 - 1e-6]``: the log-probability that all conditions
        hold if the attributes are independent given the face.

        Parameters
        ----------
        probabilities : array of shape (N, k)
            Predicted probabilities of the k attributes, one row per face. float32 input is
            scored in float32 (twice as fast; ranking does not need more).
        attributes : sequence of str
            The names of the k columns.

        Returns
        -------
        ndarray of shape (N,)
            Scores, higher is better; 0 is certainty.
        """
        attributes = tuple(attributes)
        probabilities = np.asarray(probabilities)
        if probabilities.ndim != 2 or probabilities.shape[1] != len(attributes):
            raise ValueError(f"probabilities must have shape (N, {len(attributes)}) for "
                             f"{len(attributes)} attributes, got {probabilities.shape}")
        columns = [_column(c, attributes) for c in self.conditions]
        dtype = probabilities.dtype if probabilities.dtype in (np.float32, np.float64) \
            else np.float64
        chosen = probabilities[:, columns].astype(dtype, copy=False)
        present = np.array([c.present for c in self.conditions], dtype=bool)
        # the probability that each condition holds: p when present is asked, 1 - p otherwise
        holds = np.where(present, chosen, 1 - chosen)
        np.clip(holds, EPS, 1 - EPS, out=holds)
        return np.log(holds).sum(axis=1)


def _column(condition: Condition, attributes: tuple[str, ...]) -> int:
    try:
        return attributes.index(condition.attribute)
    except ValueError:
        raise ValueError(f"the query asks for {condition.attribute} ({condition.words!r}), which "
                         f"is not among the {len(attributes)} attributes of the index: "
                         f"{', '.join(attributes)}") from None


def _words(name: str) -> str:
    """``"5_o_Clock_Shadow"`` -> ``"5 o clock shadow"``: the spelling used by the table."""
    return " ".join(w for w in re.split(r"[\s_'’-]+", name.lower()) if w)


def vocabulary(attributes=CELEBA_ATTRIBUTES) -> tuple[Term, ...]:
    """The words and phrases of the language for ``attributes``, as :class:`Term` rows.

    Each attribute's synonyms (:data:`SYNONYMS`), then its own name in words (``wearing hat``)
    when that is not already a synonym. Names also match written with underscores or as one word
    (``Wearing_Hat``, ``wearinghat``); those spellings are not listed.

    >>> [t.phrase for t in vocabulary(["Young"]) if not t.present]
    ['old', 'elderly', 'senior', 'aged', 'older']
    """
    terms = []
    for attribute in attributes:
        present_words, absent_words = SYNONYMS.get(attribute, ((), ()))
        terms += [Term(w, attribute, True) for w in present_words]
        terms += [Term(w, attribute, False) for w in absent_words]
        if _words(attribute) not in present_words:
            terms.append(Term(_words(attribute), attribute, True))
    return tuple(terms)


@dataclass(frozen=True)
class _Token:
    kind: str  # "word", "not", "and", "or", "paren"
    text: str  # lower case
    start: int
    end: int


def _tokens(text: str) -> list[_Token]:
    tokens = []
    for match in _TOKEN.finditer(text):
        raw, start, end = match.group(), match.start(), match.end()
        if raw[0].isalnum():
            tokens.append(_Token("word", raw.lower(), start, end))
        elif raw in "&,;.?":  # a trailing period or question mark is not worth an error
            tokens.append(_Token("and", raw, start, end))
        elif raw in "~!" or (raw == "-" and (start == 0 or not text[start - 1].isalnum())):
            tokens.append(_Token("not", raw, start, end))
        elif raw in _SKIPPED:
            continue  # the words on both sides count on their own
        elif raw == "|":
            tokens.append(_Token("or", raw, start, end))
        elif raw in "()":
            tokens.append(_Token("paren", raw, start, end))
        else:
            raise ValueError(f"unexpected character {raw!r} at position {start + 1} of the "
                             f"query {text!r}: use words, or attribute names joined by '&' "
                             f"with '~' for 'not'")
    return tokens


@lru_cache(maxsize=8)
def _lexicon(attributes: tuple[str, ...]) -> dict[tuple[str, ...], tuple]:
    """Phrase (tuple of words) -> ("attr", attribute, present) | ("not",) | ("stop",) | ... .

    Built over the CelebA attributes and ``attributes`` together, so that a word of an attribute
    the model lacks is recognised and reported as such rather than as unknown.
    """
    lexicon: dict[tuple[str, ...], tuple] = {}
    for kind, words in (("stop", STOP_WORDS), ("not", NEGATIONS), ("and", AND_WORDS),
                        ("or", OR_WORDS)):
        lexicon.update({tuple(w.split()): (kind,) for w in words})
    names = dict.fromkeys(CELEBA_ATTRIBUTES + attributes)
    for term in vocabulary(names):
        lexicon[tuple(term.phrase.split())] = ("attr", term.attribute, term.present)
    for name in names:  # a name written as one word: WearingHat, 5oClockShadow
        lexicon.setdefault((_words(name).replace(" ", ""),), ("attr", name, True))
    return lexicon


def _unknown_word(word: str, text: str, lexicon) -> ValueError:
    phrases = [" ".join(p) for p in lexicon]
    within = [p for p in phrases if word in p.split() and " " in p]
    if within:
        hint = f"'{word}' is only known inside phrases: {', '.join(repr(p) for p in within[:4])}"
    else:
        close = difflib.get_close_matches(word, phrases, n=3, cutoff=0.7)
        if not close and (best := closest_name(word, phrases)):
            close = [best]
        hint = ("did you mean " + " or ".join(repr(c) for c in close) + "?") if close \
            else "no known word is close"
    return ValueError(f"unknown word {word!r} in the query {text!r}: {hint} "
                      f"(docs/SEARCH.md lists every word)")


def parse_query(text: str, attributes=CELEBA_ATTRIBUTES) -> Query:
    """Parse a search query into a :class:`Query`.

    Parameters
    ----------
    text : str
        Words (``old man wearing glasses``, ``woman without a hat, not smiling``), the explicit
        form (``Male & ~Young & Eyeglasses``), or a mix.
    attributes : sequence of str, default the 40 CelebA attributes
        The attributes the index predicts; a query asking for another one is an error.

    Returns
    -------
    Query

    Raises
    ------
    ValueError
        With a one-line message for an empty query, an unknown word (with the closest known
        words), a contradiction, a negation followed by nothing, ``or`` or parentheses, or an
        attribute outside ``attributes``.

    Examples
    --------
    >>> str(parse_query("old man wearing glasses"))
    '~Young & Male & Eyeglasses'
    >>> parse_query("Male & ~Young & Eyeglasses").as_dict()
    {'Male': True, 'Young': False, 'Eyeglasses': True}
    """
    attributes = tuple(attributes)
    if not text or not text.strip():
        raise ValueError("empty query: describe the faces, e.g. 'old man wearing glasses' or "
                         "'Male & ~Young & Eyeglasses'")
    lexicon = _lexicon(attributes)
    longest = max(len(p) for p in lexicon)
    tokens = _tokens(text)
    conditions: dict[str, Condition] = {}
    negations: list[_Token] = []  # pending: they apply to the next attribute phrase
    i = 0
    while i < len(tokens):
        token = tokens[i]
        entry, size = (token.kind,), 1
        if token.kind == "word":
            run = []  # the words that follow without an operator between them
            for t in tokens[i:i + longest]:
                if t.kind != "word":
                    break
                run.append(t.text)
            for size in range(len(run), 0, -1):
                if (entry := lexicon.get(tuple(run[:size]))) is not None:
                    break
            else:
                raise _unknown_word(token.text, text, lexicon)
        kind, last = entry[0], tokens[i + size - 1]
        if kind == "or":
            raise ValueError(f"{token.text!r} is not supported in {text!r}: a query asks for all "
                             f"its conditions at once (AND); run one search per alternative")
        if kind == "paren":
            raise ValueError(f"parentheses are not supported in {text!r}: a query is a list of "
                             f"conditions that must all hold, e.g. 'Male & ~Young & Eyeglasses'")
        if kind == "and" and negations:
            raise ValueError(f"{negations[-1].text!r} in {text!r} must be followed by an "
                             f"attribute, not {token.text!r}")
        if kind == "not":
            negations.append(token)
        elif kind == "attr":
            _, attribute, present = entry
            start = negations[0].start if negations else token.start
            condition = Condition(attribute, present ^ (len(negations) % 2 == 1),
                                  text[start:last.end])
            _add(conditions, condition, attributes, text)
            negations = []
        i += size
    if negations:
        raise ValueError(f"{negations[-1].text!r} at the end of {text!r} is not followed by an "
                         f"attribute")
    if not conditions:
        raise ValueError(f"the query {text!r} names no attribute: describe the faces, e.g. "
                         f"'old man wearing glasses'")
    return Query(tuple(conditions.values()))


def _add(conditions: dict[str, Condition], condition: Condition, attributes, text: str) -> None:
    if condition.attribute not in attributes:
        raise ValueError(f"{condition.words!r} asks for {condition.attribute}, which the index "
                         f"does not predict; it predicts: {', '.join(attributes)}")
    before = conditions.get(condition.attribute)
    if before is None:
        conditions[condition.attribute] = condition
    elif before.present != condition.present:
        raise ValueError(f"contradictory query {text!r}: {before.words!r} asks for {before} and "
                         f"{condition.words!r} for {condition}")
    # the same condition twice ("man male") is kept once, with the words that first asked for it


def vocabulary_markdown(attributes=CELEBA_ATTRIBUTES) -> str:
    """The vocabulary as a Markdown table, one row per attribute (the table of docs/SEARCH.md)."""
    rows = ["| attribute | present | absent |", "| --- | --- | --- |"]
    terms = vocabulary(attributes)
    for attribute in attributes:
        cells = [", ".join(t.phrase for t in terms if t.attribute == attribute
                           and t.present == present) or "-" for present in (True, False)]
        rows.append(f"| `{attribute}` | {cells[0]} | {cells[1]} |")
    return "\n".join(rows) + "\n"
