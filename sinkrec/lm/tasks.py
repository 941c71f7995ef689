"""Long-context tasks of the Sessa paper (spec/sessa.md §5), generated locally and deterministically.

SymbolSoup: 20-class classification. Alphabet a–p (tokens 0–15). An example is
    noise <sep1> styled <sep2> noise <sep1> styled <sep2> noise <sep> <label>
with one stylized block from each of two families (4 left × 5 right styles = 20 classes, block
order random). A style is a Markov-like source: unigram preferences (2 primary, 3 secondary
letters), a few boosted bigrams, occasional motifs (runs of the alphabet of length 3–5), and 3%
uniform symbol noise. Styles are fixed by `style_seed`, so train and test share them.

Diffuse MQAR (our design): multi-query associative recall with two-token keys. The context holds
key-value triples (k1 k2 v) mixed with distractor triples whose first key token is shared with a
real key; a noise block of `lag` tokens separates them from the query block (k1 k2 → v). Token
accuracy is measured on the values; evaluate at lags up to 4× those seen in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LETTERS = 16
SEP1, SEP2, SEP = 16, 17, 18
LABEL0 = 19
SOUP_VOCAB = LABEL0 + 20


@dataclass
class Style:
    unigram: np.ndarray  # [16]
    boosts: dict[int, int]  # previous letter → boosted next letter


def make_styles(style_seed: int = 1234) -> list[Style]:
    rng = np.random.default_rng(style_seed)
    styles = []
    for _ in range(9):  # 4 left + 5 right
        weights = np.full(LETTERS, 0.2)
        letters = rng.permutation(LETTERS)
        weights[letters[:2]] = 4.0
        weights[letters[2:5]] = 1.5
        boosts = {int(a): int(b) for a, b in zip(rng.choice(LETTERS, 4, replace=False), rng.choice(LETTERS, 4))}
        styles.append(Style(weights / weights.sum(), boosts))
    return styles


def styled_block(style: Style, length: int, rng: np.random.Generator) -> list[int]:
    out: list[int] = []
    while len(out) < length:
        if rng.random() < 0.05:  # motif: a contiguous run of the alphabet
            start, run = int(rng.integers(LETTERS)), int(rng.integers(3, 6))
            out.extend((start + i) % LETTERS for i in range(run))
            continue
        if out and out[-1] in style.boosts and rng.random() < 0.5:
            out.append(style.boosts[out[-1]])
        else:
            out.append(int(rng.choice(LETTERS, p=style.unigram)))
    out = out[:length]
    noise = rng.random(length) < 0.03
    return [int(rng.integers(LETTERS)) if n else t for t, n in zip(out, noise)]


def symbol_soup(n: int, noise_len: int = 96, styled_len: int = 48, seed: int = 0,
                style_seed: int = 1234) -> tuple[np.ndarray, np.ndarray]:
    """→ (tokens [n, L] ending with <sep>, labels [n] in 0..19)."""
    styles = make_styles(style_seed)
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for _ in range(n):
        left, right = int(rng.integers(4)), int(rng.integers(5))
        blocks = [styled_block(styles[left], styled_len, rng), styled_block(styles[4 + right], styled_len, rng)]
        if rng.random() < 0.5:
            blocks.reverse()
        noise = [list(rng.integers(0, LETTERS, noise_len)) for _ in range(3)]
        seq = noise[0] + [SEP1] + blocks[0] + [SEP2] + noise[1] + [SEP1] + blocks[1] + [SEP2] + noise[2] + [SEP]
        rows.append(seq)
        labels.append(left * 5 + right)
    return np.asarray(rows, dtype=np.int64), np.asarray(labels, dtype=np.int64)


def mqar_vocab(n_key: int = 32, n_value: int = 32, n_noise: int = 16) -> dict[str, int]:
    return {"key": 0, "value": n_key, "noise": n_key + n_value, "size": n_key + n_value + n_noise}


def diffuse_mqar(n: int, pairs: int = 8, distractors: int = 8, lag: int = 64, seed: int = 0,
                 n_key: int = 32, n_value: int = 32, n_noise: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """→ (tokens [n, L], targets [n, L] with −100 except at value positions of the query block)."""
    vocab = mqar_vocab(n_key, n_value, n_noise)
    rng = np.random.default_rng(seed)
    rows, targets = [], []
    for _ in range(n):
        firsts = rng.choice(n_key, pairs, replace=False)
        seconds = rng.integers(0, n_key, pairs)
        values = rng.integers(0, n_value, pairs)
        triples = [(int(a), int(b), vocab["value"] + int(v)) for a, b, v in zip(firsts, seconds, values)]
        for _ in range(distractors):  # shares a first token with a real key, differs in the second
            i = int(rng.integers(pairs))
            other = (int(seconds[i]) + int(rng.integers(1, n_key))) % n_key
            triples.append((int(firsts[i]), other, vocab["value"] + int(rng.integers(n_value))))
        order = rng.permutation(len(triples))
        context = [t for j in order for t in triples[j]]
        noise = list(vocab["noise"] + rng.integers(0, n_noise, lag))
        query_order = rng.permutation(pairs)
        query, target = [], []
        for j in query_order:
            a, b, v = triples[j]
            query += [a, b, v]
            target += [-100, v, -100]  # predict v at the position of k2
        rows.append(context + noise + query)
        targets.append([-100] * (len(context) + len(noise)) + target)
    return np.asarray(rows, dtype=np.int64), np.asarray(targets, dtype=np.int64)
