"""Per-output flags: off-topic answers, novel outputs, operational anomalies, broken answers.

Each check looks at one call against a reference window and says whether a person should look at
it. `call_flags` gathers the checks for a window into plain `Flag` rows a scheduler can store.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .multiple import benjamini_hochberg, conformal_p_values

__all__ = [
    "DEFAULT_NOVELTY_Q",
    "DEFAULT_RELEVANCE_THRESHOLD",
    "OPERATIONAL_Z",
    "REASONS",
    "TRUNCATION_REASONS",
    "Flag",
    "NoveltyScorer",
    "call_flags",
    "is_empty",
    "is_refusal",
    "is_truncated",
    "refusal_phrase",
    "relevance",
    "relevance_threshold",
    "robust_z",
]

# Fixed threshold from the issue: a response whose cosine with its prompt is below this is flagged
# as off-topic. Measured with all-MiniLM-L6-v2 on the Debian corpus (prompt "What is <package>?
# <synopsis>", response = long description), genuine pairs have a median relevance of about 0.73
# and 40% of them fall below 0.7, while off-topic (shuffled) pairs sit around 0.15. The fixed value
# therefore over-flags short prompts with long answers; `relevance_threshold` calibrates one from a
# reference window instead.
DEFAULT_RELEVANCE_THRESHOLD = 0.7
DEFAULT_RELEVANCE_QUANTILE = 0.01
DEFAULT_NOVELTY_Q = 0.1
OPERATIONAL_Z = 4.0
# 1.4826 · MAD estimates the standard deviation of a normal sample; sqrt(pi / 2) · (mean absolute
# deviation) does the same and stays positive when more than half the values are equal.
_MAD_SCALE = 1.4826
_MEAN_AD_SCALE = math.sqrt(math.pi / 2)
# Last resort for a constant reference: a 1% change counts as one unit of scale.
_RELATIVE_EPSILON = 0.01
_ABSOLUTE_EPSILON = 1e-12
_CHUNK_BYTES = 64 * 2**20

REASONS = (
    "low_relevance",
    "novel",
    "latency",
    "tokens",
    "cost",
    "error",
    "truncated",
    "empty",
    "refusal",
)

# OpenAI chat completions and our Responses mapping say "length", Anthropic and Gemini
# "max_tokens" / "MAX_TOKENS", the raw Responses API "max_output_tokens" (incomplete_details).
TRUNCATION_REASONS = frozenset({"length", "max_tokens", "max_output_tokens"})


@dataclass(frozen=True)
class Flag:
    """Why one output was flagged. For `low_relevance` the score fell below the threshold; for
    `novel` the score is the conformal p-value and the threshold the BH cut-off; for `latency`,
    `tokens` and `cost` the score is a robust z above the threshold; boolean checks (`error`,
    `truncated`, `empty`, `refusal`) carry score 1 and threshold 1."""

    reason: str
    score: float
    threshold: float
    detail: str


# ---------------------------------------------------------------------------------------------
# vectors


def _matrix(vectors: npt.ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-d array (rows, dimension), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _normalised(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows, and a mask of the rows that were zero (which stay zero)."""
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    zero = norms[:, 0] == 0
    return array / np.where(norms == 0, 1, norms), zero


def relevance(prompt_vectors: npt.ArrayLike, response_vectors: npt.ArrayLike) -> np.ndarray:
    """Row-wise cosine similarity of prompt and response embeddings, shape (n,), float64.

    Rows are normalised here, whatever the embedder did. A zero vector has no direction: its
    relevance is NaN, which no threshold flags.
    """
    prompts = _matrix(prompt_vectors, "prompt_vectors")
    responses = _matrix(response_vectors, "response_vectors")
    if prompts.shape != responses.shape:
        raise ValueError(
            f"prompt_vectors and response_vectors differ in shape: {prompts.shape} vs "
            f"{responses.shape}"
        )
    p, p_zero = _normalised(prompts.astype(np.float64))
    r, r_zero = _normalised(responses.astype(np.float64))
    cosine = np.einsum("ij,ij->i", p, r)
    cosine[p_zero | r_zero] = np.nan
    return np.clip(cosine, -1.0, 1.0)


def relevance_threshold(
    reference_relevance: npt.ArrayLike,
    quantile: float = DEFAULT_RELEVANCE_QUANTILE,
    floor: float | None = None,
) -> float:
    """Calibrated low-relevance threshold: the k-th smallest reference relevance, k = ⌊q·(n+1)⌋.

    Flagging `relevance < threshold` then flags at most a fraction `quantile` of new outputs that
    are exchangeable with the reference (finite-sample, no distributional assumption). NaNs are
    ignored. `floor` is a lower bound on the result, so that a reference full of off-topic answers
    cannot switch the check off. Needs at least ⌈1/q⌉ - 1 values (99 for q = 0.01).
    """
    q = float(quantile)
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must lie strictly between 0 and 1, got {quantile!r}")
    values = np.asarray(reference_relevance, dtype=np.float64).ravel()
    values = np.sort(values[~np.isnan(values)])
    k = math.floor(q * (values.size + 1) + 1e-9)  # 0.29 · 100 is 28.999… in floating point
    if k < 1:
        raise ValueError(
            f"reference_relevance has {values.size} values; a {q:g} quantile needs at least "
            f"{math.ceil(1 / q) - 1}"
        )
    threshold = float(values[k - 1])
    return threshold if floor is None else max(threshold, float(floor))


class NoveltyScorer:
    """Split-conformal novelty of embeddings against a reference window.

    The reference rows are shuffled (seeded) and split: a calibration part (`calibration_fraction`
    of them) and a fit part (the rest). The novelty score of any vector is its mean cosine distance
    to its k nearest neighbours in the fit part; p-values rank a score among the calibration scores.

    The smallest p-value is 1 / (n_cal + 1), so BH at q can only flag anything in a window where
    the novel share exceeds about 1 / (q · (n_cal + 1)): 0.2% for q = 0.1 and a 5,000-row
    calibration part, but 10% for a 100-row one. And a row is only flagged when its score beats
    nearly every calibration score: a topic the reference lacks but whose texts resemble it (one
    more kind of software description) mostly is not; the window-level drift tests catch that.
    Both guarantees (p-values, BH's false discovery rate) hold on average over the draw of the
    reference; for one fixed reference the realised rates scatter around them, less so the larger
    the calibration part.
    """

    def __init__(
        self,
        reference_vectors: npt.ArrayLike,
        *,
        k: int = 10,
        calibration_fraction: float = 0.5,
        seed: int = 0,
        chunk_bytes: int = _CHUNK_BYTES,
    ) -> None:
        reference = _matrix(reference_vectors, "reference_vectors")
        if not 0.0 < calibration_fraction < 1.0:
            raise ValueError(
                f"calibration_fraction must lie strictly between 0 and 1, got "
                f"{calibration_fraction!r}"
            )
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
        n = reference.shape[0]
        n_calibration = round(n * calibration_fraction)
        n_fit = n - n_calibration
        if n_calibration < 1 or n_fit < k:
            raise ValueError(
                f"reference_vectors has {n} rows: with calibration_fraction "
                f"{calibration_fraction} that leaves {n_calibration} for calibration and {n_fit} "
                f"to fit, which needs at least k = {k} and calibration at least 1"
            )
        order = np.random.default_rng(seed).permutation(n)
        unit, _ = _normalised(reference)
        self.k = k
        self.dimension = reference.shape[1]
        self.chunk_bytes = chunk_bytes
        self.fit_vectors = np.ascontiguousarray(unit[order[n_calibration:]])
        # The calibration rows are not in the fit part, exactly as a new output is not, and they
        # are scored by the same function as new outputs (the same fit part, the same k, nothing
        # left out). Calibration and test scores are then exchangeable when the test rows come from
        # the reference's distribution, which is all the conformal p-value needs. Scoring the fit
        # rows themselves (leave-one-out) would be a different function and break the guarantee.
        self.calibration_scores = self.score(unit[order[:n_calibration]])

    def score(self, vectors: npt.ArrayLike) -> np.ndarray:
        """Mean cosine distance to the k nearest fit-part rows, shape (n,), float64."""
        queries = _matrix(vectors, "vectors")
        if queries.shape[1] != self.dimension:
            raise ValueError(
                f"vectors have dimension {queries.shape[1]}, the reference {self.dimension}"
            )
        queries, _ = _normalised(queries)
        n_fit = self.fit_vectors.shape[0]
        rows = max(1, self.chunk_bytes // (4 * n_fit))
        scores = np.empty(queries.shape[0], dtype=np.float64)
        for start in range(0, queries.shape[0], rows):
            similarity = queries[start : start + rows] @ self.fit_vectors.T
            nearest = np.partition(similarity, n_fit - self.k, axis=1)[:, n_fit - self.k :]
            scores[start : start + rows] = 1.0 - nearest.astype(np.float64).mean(axis=1)
        return scores

    def p_values(self, vectors: npt.ArrayLike) -> np.ndarray:
        """Conformal p-values: small when a row is further from the reference than calibration."""
        return conformal_p_values(self.calibration_scores, self.score(vectors))

    def flags(self, vectors: npt.ArrayLike, q: float = DEFAULT_NOVELTY_Q) -> np.ndarray:
        """Boolean mask of novel rows: Benjamini-Hochberg at false discovery rate q."""
        p = self.p_values(vectors)
        if p.size == 0:
            return np.zeros(0, dtype=bool)
        return np.array(benjamini_hochberg(p, q), dtype=bool)


# ---------------------------------------------------------------------------------------------
# operational


def robust_z(reference_values: npt.ArrayLike, values: npt.ArrayLike) -> np.ndarray:
    """(value - median) / scale, with scale = 1.4826 · MAD of the reference.

    When the MAD is 0 (more than half the reference is one value) the scale falls back to
    sqrt(pi/2) · mean absolute deviation from the median; when that is 0 too (a constant reference)
    to 1% of |median|, or 1e-12 when the median is 0, so any change stands out. NaNs in the
    reference are ignored; a NaN value gets a NaN z, which no threshold flags.
    """
    reference = np.asarray(reference_values, dtype=np.float64).ravel()
    reference = reference[~np.isnan(reference)]
    if reference.size == 0:
        raise ValueError("reference_values has no values that are not NaN")
    if np.isinf(reference).any():
        raise ValueError("reference_values contains infinite values")
    center = float(np.median(reference))
    deviation = np.abs(reference - center)
    scale = _MAD_SCALE * float(np.median(deviation))
    if scale == 0.0:
        scale = _MEAN_AD_SCALE * float(deviation.mean())
    if scale == 0.0:
        scale = max(_RELATIVE_EPSILON * abs(center), _ABSOLUTE_EPSILON)
    return (np.asarray(values, dtype=np.float64) - center) / scale


def is_truncated(finish_reasons: Sequence[str]) -> bool:
    """True if any choice stopped at the token limit (case-insensitive, see TRUNCATION_REASONS)."""
    if isinstance(finish_reasons, str):
        finish_reasons = [finish_reasons]
    return any(reason.strip().lower() in TRUNCATION_REASONS for reason in finish_reasons if reason)


_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"


def is_empty(text: str | None) -> bool:
    """True for no output, or one that is only whitespace or zero-width characters."""
    return text is None or not text.strip().strip(_INVISIBLE).strip()


_NEGATION = (
    r"(?:can't|cannot|can not|won't|will not|am unable to|'m unable to|am not able to|"
    r"'m not able to|won't be able to|will not be able to|am not allowed to|'m not allowed to)"
)
_REFUSED = (
    r"(?:help|assist|provide|comply|fulfil|fulfill|answer|do that|do this|share|give|create|"
    r"generate|write|discuss|support|engage|complete|process|continue|respond)"
)
_CANNOT = r"(?:can't|cannot|can not|won't|will not|am unable|'m unable|am not able|'m not able)"
# Refusal openings, matched case-insensitively at the start of the answer's first or second
# sentence (after apostrophes are straightened). Each needs a first-person "I" with a negation,
# so an answer that merely mentions what a program "cannot" do does not match.
REFUSAL_PATTERNS = (
    # I'm sorry, but I cannot ... / I am sorry, I can't ...
    rf"(?:i'm|i am) (?:so |very |really )?sorry,? (?:but )?i {_CANNOT}",
    # Sorry, but I can't ... / Unfortunately, I am unable ...
    rf"(?:sorry|unfortunately),? (?:but )?i {_CANNOT}",
    # I apologize, but I cannot ...
    rf"i apologi[sz]e,? (?:but )?i {_CANNOT}",
    # As an AI language model, I cannot ... / As an AI, I don't ...
    rf"as an ai(?: language model| assistant| model)?,? i (?:{_CANNOT}|don't|do not)",
    # I can't help with that. / I am unable to assist ... / I won't be able to provide ...
    rf"i {_NEGATION} {_REFUSED}\b",
    # I must decline ... / I have to refuse ...
    r"i (?:must|have to|need to) (?:respectfully )?(?:decline|refuse)",
)
_REFUSAL = re.compile("|".join(f"(?:{p})" for p in REFUSAL_PATTERNS))
_SENTENCE_END = re.compile(r"[.!?:]\s+|\n+")
_LEADING_MARKUP = " \t\r\n*_>#\"'`-"
_OPENING_CHARS = 300


def refusal_phrase(text: str | None) -> str | None:
    """The refusal phrase an answer opens with, or None (see REFUSAL_PATTERNS)."""
    if not text:
        return None
    opening = text[: _OPENING_CHARS * 2].replace("\u2019", "'").replace("\u2018", "'").lower()
    opening = re.sub(r"[ \t]+", " ", opening).lstrip(_LEADING_MARKUP)[:_OPENING_CHARS]
    starts = [0, *[m.end() for m in _SENTENCE_END.finditer(opening)][:1]]
    for start in starts:
        match = _REFUSAL.match(opening, start)
        if match:
            return match.group(0)
    return None


def is_refusal(text: str | None) -> bool:
    """True when the answer opens (first or second sentence) with a common refusal phrase."""
    return refusal_phrase(text) is not None


# ---------------------------------------------------------------------------------------------
# per-call flags


def call_flags(
    *,
    relevance: npt.ArrayLike | None = None,
    relevance_threshold: float = DEFAULT_RELEVANCE_THRESHOLD,
    novelty_p_values: npt.ArrayLike | None = None,
    novelty_q: float = DEFAULT_NOVELTY_Q,
    latency_z: npt.ArrayLike | None = None,
    tokens_z: npt.ArrayLike | None = None,
    cost_z: npt.ArrayLike | None = None,
    z_threshold: float = OPERATIONAL_Z,
    errors: Sequence[bool | str | None] | None = None,
    finish_reasons: Sequence[Sequence[str] | str | None] | None = None,
    outputs: Sequence[str | None] | None = None,
) -> list[list[Flag]]:
    """The flags of each call in one window; every argument is per call, in the same order.

    Leave out what a window does not have. `novelty_p_values` must cover the whole window:
    Benjamini-Hochberg at `novelty_q` runs across them here. Operational z-scores flag on the high
    side only (slow, long, expensive); short outputs are the `empty` and `truncated` checks' job.
    `errors` holds a truthy value (an `error.type` string, or True) for failed calls.
    """
    columns: dict[str, int] = {}

    def column(values: npt.ArrayLike | None, name: str) -> np.ndarray | None:
        if values is None:
            return None
        array = np.asarray(values, dtype=np.float64).ravel()
        columns[name] = array.size
        return array

    rel = column(relevance, "relevance")
    novelty_p = column(novelty_p_values, "novelty_p_values")
    operational = [
        (reason, column(z, f"{reason}_z"))
        for reason, z in (("latency", latency_z), ("tokens", tokens_z), ("cost", cost_z))
    ]
    for name, seq in (("errors", errors), ("finish_reasons", finish_reasons), ("outputs", outputs)):
        if seq is not None:
            columns[name] = len(seq)
    if not columns:
        raise ValueError("call_flags needs at least one per-call input")
    if len(set(columns.values())) > 1:
        raise ValueError(f"per-call inputs differ in length: {columns}")
    n = next(iter(columns.values()))
    flags: list[list[Flag]] = [[] for _ in range(n)]

    if rel is not None:
        for i in np.flatnonzero(rel < relevance_threshold):
            flags[i].append(
                Flag(
                    "low_relevance",
                    float(rel[i]),
                    relevance_threshold,
                    f"prompt-response cosine {rel[i]:.3f} < {relevance_threshold:.3f}",
                )
            )
    if novelty_p is not None and n:
        novel = np.array(benjamini_hochberg(novelty_p, novelty_q), dtype=bool)
        cutoff = novelty_q * int(novel.sum()) / n
        for i in np.flatnonzero(novel):
            flags[i].append(
                Flag(
                    "novel",
                    float(novelty_p[i]),
                    cutoff,
                    f"conformal p {novelty_p[i]:.4g} <= BH cut-off {cutoff:.4g} "
                    f"(q={novelty_q:g}, {int(novel.sum())} of {n})",
                )
            )
    for reason, z in operational:
        if z is None:
            continue
        for i in np.flatnonzero(z > z_threshold):
            flags[i].append(
                Flag(
                    reason,
                    float(z[i]),
                    z_threshold,
                    f"{reason} robust z {z[i]:.1f} > {z_threshold:g}",
                )
            )
    for call in range(n):
        error = errors[call] if errors is not None else None
        if error:
            flags[call].append(
                Flag("error", 1.0, 1.0, error if isinstance(error, str) else "failed")
            )
        reasons = finish_reasons[call] if finish_reasons is not None else None
        if reasons and is_truncated(reasons):
            shown = reasons if isinstance(reasons, str) else ",".join(reasons)
            flags[call].append(Flag("truncated", 1.0, 1.0, f"finish_reason={shown}"))
        text = outputs[call] if outputs is not None else ""
        if outputs is not None and is_empty(text):
            flags[call].append(Flag("empty", 1.0, 1.0, "output is blank"))
        elif (phrase := refusal_phrase(text)) is not None:
            flags[call].append(Flag("refusal", 1.0, 1.0, f"opens with {phrase!r}"))
    return flags
