"""Text pools for the synthetic dataset: wake phrase, confusable hard negatives, generic speech.

Everything here is pure string work driven by a ``numpy.random.Generator``, so the plan of what is
spoken is deterministic given the seed. ``contains_phrase`` is the single guard that keeps the full
wake phrase out of every negative text (word-level match after normalisation).
"""

from __future__ import annotations

import re

import numpy as np

# Hand-picked near misses for the default phrase: one phoneme off, a word dropped or swapped, or
# a longer word that starts like the phrase. Generated ones (below) cover any other phrase.
CURATED_CONFUSABLES = {
    "hey nova": [
        "hey nora", "hey over", "say nova", "hey no", "hey noah", "hey novel", "hey novak",
        "hey noble", "hey mova", "pay nova", "okay nova", "hey nevada", "hey rover", "a nova",
        "hey no way", "they know of a", "hey Nolan", "hay over", "hey lover", "hey sofa",
        "hey nomad", "stay novel", "hey supernova", "hey Nana", "hey Noa",
    ],
}

# Short, natural sentences and command words (the Speech Commands vocabulary is a classic source
# of false accepts). Random word strings below add variety without a language model.
SENTENCES = [
    "the weather is nice today", "can you turn off the lights", "what time is it",
    "I will be there in ten minutes", "please call my mother", "set a timer for five minutes",
    "play some music", "how far is the station", "the meeting starts at noon",
    "open the window please", "did you feed the cat", "we need more coffee",
    "remind me to buy milk", "the train is late again", "turn the volume down",
    "where are my keys", "let us go for a walk", "that sounds like a good idea",
    "the kids are asleep", "send a message to John", "how do you spell that",
    "I like this song a lot", "it is going to rain tomorrow", "close the door behind you",
    "the oven is still hot", "my phone battery is low", "what is on the calendar",
    "the package arrived this morning", "could you repeat that", "good morning everyone",
    "thank you very much", "see you later", "I am not sure about that", "hello there",
    "the bus leaves at seven", "start the washing machine", "is the store open now",
    "read me the news", "the garden needs water", "how was your day",
]
COMMAND_WORDS = [
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "zero", "one", "two",
    "three", "four", "five", "six", "seven", "eight", "nine", "bed", "bird", "cat", "dog", "happy",
    "house", "marvin", "sheila", "tree", "wow", "learn", "follow", "forward", "backward", "visual",
]
VOCABULARY = sorted(set(
    "about after again air all also always animal answer any around ask away back ball be because "
    "before begin best better big black blue boat book both box boy bring brother build call car "
    "carry change children city clean clock cold color come cook country cut dance dark day deep "
    "dinner door draw dream drink drive early earth eat end evening every eye face fall family far "
    "fast father field fire fish floor flower fly food foot forest friend full game garden girl "
    "give glass good green ground grow hand hard head hear help here high hold home horse hot hour "
    "idea island jump keep kind king kitchen know lake large last late laugh leaf light line listen "
    "little live long look love low make many map market milk minute money moon morning mother "
    "mountain move music name near never new next night number ocean often old open orange page "
    "paper park party people picture place plant play point pull push question quick quiet rain "
    "read red river road rock room round run school sea second seed short shoe side sing sister "
    "sleep slow small snow song sound spring stand star start station stone story street strong "
    "summer sun table take talk teacher thing think time today together town train travel tree "
    "true turn under use village voice wait walk warm watch water way week west wheel white wind "
    "window winter word work world write year young".split()))


def normalize(text: str) -> list[str]:
    """Lower-case word tokens (apostrophes kept, other punctuation dropped)."""
    return re.findall(r"[a-z']+", text.lower())


def contains_phrase(text: str, phrase: str) -> bool:
    """True when the phrase's words occur consecutively in ``text`` (word-level, case-insensitive)."""
    words, target = normalize(text), normalize(phrase)
    n = len(target)
    return any(words[i:i + n] == target for i in range(len(words) - n + 1))


def phrase_label_name(phrase: str) -> str:
    """``"Hey Nova"`` -> ``"hey_nova"`` (the positive class name in ``label_names``)."""
    return "_".join(normalize(phrase))


def positive_variants(phrase: str) -> list[str]:
    """Spellings of the wake phrase that espeak says with different intonation."""
    p = " ".join(normalize(phrase))
    return [p, p + "!", p + "?", p + ".", p.title(), p.title() + "!"]


def _word_neighbours(word: str) -> list[str]:
    """Spelling-level neighbours of one word: swap the onset consonant, the final vowel, add r/l."""
    out = []
    vowels = "aeiou"
    if word[0] not in vowels:
        onset = len(word) - len(word.lstrip("bcdfghjklmnpqrstvwxyz"))
        out += [c + word[onset:] for c in "bdgklmnprstvz" if c != word[0]]
    else:
        out += [c + word for c in "bhmnt"]
    if word[-1] in vowels:
        out += [word[:-1] + v for v in vowels if v != word[-1]]
        out.append(word + "r")
    else:
        out += [word + "a", word[:-1]] if len(word) > 2 else [word + "a"]
    return [w for w in out if w != word]


def confusable_phrases(phrase: str) -> list[str]:
    """Near-miss phrases (label 0): curated ones for the default, else one word altered at a time."""
    words = normalize(phrase)
    out = list(CURATED_CONFUSABLES.get(" ".join(words), []))
    if out:  # curated list first and alone: generated neighbours of "hey nova" add little
        return out
    for i, w in enumerate(words):
        for alt in _word_neighbours(w):
            out.append(" ".join(words[:i] + [alt] + words[i + 1:]))
    if len(words) > 1:
        out.append(" ".join(reversed(words)))
    seen, unique = set(), []
    for t in out:
        if t not in seen and not contains_phrase(t, phrase):
            seen.add(t)
            unique.append(t)
    return unique


def partial_phrases(phrase: str) -> list[str]:
    """The phrase cut short: every proper contiguous word sub-sequence (``hey``, ``nova``).

    For a one-word phrase, the first and second half of its letters.
    """
    words = normalize(phrase)
    if len(words) == 1:
        w = words[0]
        return [w[: len(w) // 2], w[len(w) // 2:]]
    subs = {" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)}
    subs.discard(" ".join(words))
    return sorted(subs)


def random_sentence(rng: np.random.Generator, phrase: str) -> str:
    """A generic negative utterance: a natural sentence, a command word or a random word string."""
    while True:
        r = rng.random()
        if r < 0.45:
            text = SENTENCES[rng.integers(len(SENTENCES))]
        elif r < 0.65:
            text = COMMAND_WORDS[rng.integers(len(COMMAND_WORDS))]
        else:
            n = int(rng.integers(2, 8))
            text = " ".join(VOCABULARY[i] for i in rng.integers(len(VOCABULARY), size=n))
        if not contains_phrase(text, phrase):
            return text


def fragment_sentence(rng: np.random.Generator, phrase: str) -> tuple[str, str]:
    """The phrase split inside a longer sentence, returned as the side that lacks the full phrase.

    Returns ``(text, side)``; ``side == "end"`` means the text ends with the phrase's first part
    (crop the clip to the text's end), ``"start"`` that it begins with the phrase's last part.
    A 1-s window at that end of a real sentence "... hey | nova ..." is what a streaming detector
    sees just before / after the phrase, and it must not fire there.
    """
    words = normalize(phrase)
    if len(words) == 1:
        w = words[0]
        head, tail = [w[: len(w) // 2]], [w[len(w) // 2:]]
    else:
        cut = int(rng.integers(1, len(words)))
        head, tail = words[:cut], words[cut:]
    context = [VOCABULARY[i] for i in rng.integers(len(VOCABULARY), size=int(rng.integers(2, 5)))]
    if rng.random() < 0.5:
        return " ".join(context + head), "end"
    return " ".join(tail + context), "start"
