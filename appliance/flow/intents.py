"""Speech choices: phrases → a JSGF grammar for pocketsphinx, and recognised text → an intent.

The text simulator and the audio path share `match`, so a typed line and a recognised
utterance reach the same intent by the same rule.
"""

from __future__ import annotations

import re

from appliance.speech.stt import known_words

DIGIT_WORDS = {
    "zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9",
}


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+|\d", text.lower())


def match(text: str, intents: dict[str, list[str]]) -> str | None:
    """The intent whose phrase best covers what was said; None when nothing fits.

    Words that sound alike ("to", "two") compare as one word: the recogniser cannot tell
    them apart, so neither may the matcher.
    """
    said = _sounds(words(text))
    if not said:
        return None
    said_set = set(said)
    best, best_score = None, 0.0
    for intent, phrases in intents.items():
        for phrase in phrases:
            wanted = _sounds(words(phrase))
            if not wanted:
                continue
            joined = " ".join(said)
            if f" {' '.join(wanted)} " in f" {joined} ":  # whole words: "no" is not in "i know"
                score = 1.0 + len(wanted) / 100  # a longer exact phrase wins
                if set(wanted) <= set(_SAME_SOUND.values()):
                    score -= 0.02  # "two" alone may have been "to": weaker than any other exact phrase
            else:
                score = len(said_set & set(wanted)) / len(set(wanted))
            if score > best_score:
                best, best_score = intent, score
    return best if best_score >= 0.6 else None


# Words the recogniser may write for a digit it heard (same pronunciation in its dictionary).
HOMOPHONES = {"to": "2", "too": "2", "for": "4", "won": "1", "ate": "8"}
_SAME_SOUND = {"to": "two", "too": "two", "for": "four", "won": "one", "ate": "eight"}


def _sounds(tokens: list[str]) -> list[str]:
    return [_SAME_SOUND.get(t, t) for t in tokens]


def ends_in_digit(text: str) -> bool:
    """Whether the caller's words end in a digit ("my account is five five five"): a number
    being read out in groups may go on after a pause. Homophones ("to", "for") do not count:
    "I want to talk to" is not a number."""
    said = words(text)
    return bool(said) and (said[-1] in DIGIT_WORDS or said[-1].isdigit())


# Words a sentence goes on after ("I would like to …", "where is my …", "I want to talk …"):
# words so far that end on one are not a whole request, whatever they hold.
LEAD_INS = frozenset(("a", "about", "an", "and", "at", "for", "i", "in", "like", "my", "of", "on", "or", "speak",
                      "talk", "the", "to", "want", "with", "would", "your"))


def complete(text: str, phrases: list[str]) -> bool:
    """Whether the caller's words so far make a whole request: they hold one of `phrases` (not
    a number's) word for word and do not end on a lead-in word or a digit (a number may go on).
    With no phrases (an open-vocabulary persona) only the last word decides.

    Word for word, not by `match`'s share of words: the recogniser ends a fragment with a stray
    word ("Where is my …" as "where is my it"), which shares three of the four words of "where
    is my order" and would end the turn inside the caller's pause (measured on
    bench/persona_turns.py's corpus). Homophones are not folded: "to" must not stand for the
    phrase "two". A phrase of digits alone makes no request whole: a digit misheard inside a
    fragment ("I want to ask about" as "i one with to long") would end the turn on it.
    """
    said = words(text)
    if not said or said[-1] in LEAD_INS or ends_in_digit(text):
        return False
    joined = f" {' '.join(said)} "
    wanted = [" ".join(w) for p in phrases if (w := words(p)) and not all(x in DIGIT_WORDS or x.isdigit() for x in w)]
    return not wanted or any(f" {w} " in joined for w in wanted)


def spoken_digits(text: str) -> str:
    """'one two three' or '1 2 3' → '123'; other words are ignored."""
    table = DIGIT_WORDS | HOMOPHONES
    return "".join(table.get(w, w if w.isdigit() else "") for w in words(text))


# Words callers wrap around a choice ("I'd like to talk to sales please"): in the grammar so
# they are recognised as themselves instead of being forced onto a choice's words.
FILLERS = ("i", "want", "would", "like", "to", "talk", "speak", "with", "please",
           "my", "me", "about", "is", "it", "yes", "no", "hello", "and", "for", "in", "of")
# (Hesitations like "uh" are the recogniser's own filler model, not words of the grammar.)
# Fillers a digit is heard as ("one" came out as "want"): left out where digits are heard.
DIGIT_LIKE_FILLERS = ("want", "to", "for")


def grammar(intents: dict[str, list[str]], digits: bool = False) -> str:
    """JSGF accepting any run of the choices' words (plus common fillers, and digits); digits
    alone are the grammar named `digits`, which the decoder gives settings of its own
    and pronunciations (`appliance.speech.stt.SEARCH_SETTINGS`, `PRONUNCIATIONS`)."""
    phrase_words = {w for phrases in intents.values() for p in phrases for w in words(p) if not w.isdigit()}
    if digits and not phrase_words:
        # A digits-only gather hears digits only: "to" would steal "two".
        return "#JSGF V1.0;\ngrammar digits;\npublic <digits> = ( " + " | ".join(sorted(DIGIT_WORDS)) + " )+ ;\n"
    vocabulary = phrase_words | set(FILLERS)
    if digits:
        # A digit must never lose to a filler; a phrase's own words stay (the admin wrote them).
        vocabulary = (vocabulary - set(DIGIT_LIKE_FILLERS)) | phrase_words | set(DIGIT_WORDS)
    # A word the dictionary lacks would make pocketsphinx refuse the whole grammar mid-call;
    # `flows check` reports such words, and here they are left out rather than fail.
    vocabulary &= known_words()
    if not vocabulary:
        vocabulary = set(FILLERS)
    return "#JSGF V1.0;\ngrammar choices;\npublic <choice> = ( " + " | ".join(sorted(vocabulary)) + " )+ ;\n"
