r"""A chapter's claims as objects: one table per chapter, rendered and recorded from one place.

Each chapter of the book ends with the paper's claims, what was run to test each one, the
measured effect with its interval and the computed verdict. A notebook builds that list
once, as :class:`Claim` objects in a :class:`ClaimsTable`, and the same object

- renders the chapter's claims table (:meth:`ClaimsTable.markdown`, shown by
  :meth:`ClaimsTable.show`): one row per claim with its source tag, what we ran, the effect
  ``mean [95% CI]`` and the verdict as a coloured label that also reads without colour
  (a symbol and the verdict's words, see :data:`VERDICT_LABELS`);
- records the verdicts (:meth:`ClaimsTable.record`) for the landing page and the book's
  scorecard, with the source tag, what was run, the effect, the budget the claim was
  tested at and the page section that shows the table.

Example, in a notebook::

    table = ClaimsTable("02_recall", budget=setup.budget(), scope=setup.describe(), claims=[
        Claim("recall loss raises mean accuracy over CE", source="abstract",
              ran="recall (batch) vs CE, mean accuracy", label="(a)",
              evidence=Evidence("Δ mean acc.", d_acc, direction=+1)),
    ])
    table.show()
    table.record(results_dir)

In the book the claim texts live in the chapter modules (:mod:`pixelweight.chapters`), which
build the table from the effects a notebook measured; ``setup.claims_table(claims)`` labels
it with the budget and scale.

Source tags say where a claim comes from (the evidence tags of ``shared/papers.md``):
:data:`SOURCES`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Optional, Sequence, Union

from .stats import (
    VERDICTS,
    Interval,
    combine_verdicts,
    detectable_effect,
    equivalence_verdict,
    seeds_in_direction,
)
from .stats import verdict as direction_verdict

__all__ = ["SOURCES", "VERDICT_LABELS", "Evidence", "Claim", "Check", "ClaimsTable", "verdict_badge"]

#: Where a claim comes from. ``abstract``: stated in the paper's abstract; ``code``: checked
#: in a public implementation; ``paper, unverified``: from the paper's body, not confirmed;
#: ``derived``: derived in the book and checked numerically; ``ours``: a question the book
#: asks that the paper does not state.
SOURCES = ("abstract", "code", "paper, unverified", "derived", "ours")

#: How each verdict is shown: (sphinx-design badge colour, symbol). The symbol and the words
#: carry the verdict for a reader who does not see the colour (or prints the page).
VERDICT_LABELS = {
    "supported": ("success", "✓"),
    "contradicted": ("danger", "✗"),
    "inconclusive": ("warning", "?"),
    "not testable at this scale": ("dark", "–"),
}
if set(VERDICT_LABELS) != set(VERDICTS):  # pragma: no cover - a verdict added without its label
    raise RuntimeError("pixelweight.claims.VERDICT_LABELS must cover pixelweight.stats.VERDICTS")

_SECTION_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_CHAPTER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _one_line(value, name: str, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if (not empty and not value.strip()) or "\n" in value:
        raise ValueError(f"{name} must be one {'' if empty else 'non-empty '}line of text, got {value!r}")
    return value


def verdict_badge(verdict: str) -> str:
    """The MyST markup of a verdict's label: a coloured badge with a symbol and the words.

    >>> verdict_badge("supported")
    '{bdg-success}`✓ supported`'
    """
    if verdict not in VERDICT_LABELS:
        raise ValueError(f"verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
    colour, symbol = VERDICT_LABELS[verdict]
    return f"{{bdg-{colour}}}`{symbol} {verdict}`"


@dataclasses.dataclass(frozen=True)
class Evidence:
    """One measured difference and how it is judged: the part of a claim the data decide.

    Parameters
    ----------
    what : str
        The quantity, a few words (e.g. "Δ mean acc.").
    effect : Interval
        The measured (paired) difference with its interval.
    direction : {+1, -1}
        The sign the claim predicts (:func:`pixelweight.stats.verdict`).
    margin : float
        How far past zero the effect must be, in the claimed direction.
    tolerance : float, optional
        Given, the claim is one of non-inferiority ("no worse than by more than
        ``tolerance``", :func:`pixelweight.stats.equivalence_verdict`); ``direction`` and
        ``margin`` are then not used.
    """

    what: str
    effect: Interval
    direction: int = +1
    margin: float = 0.0
    tolerance: Optional[float] = None

    def __post_init__(self):
        _one_line(self.what, "what")
        if not isinstance(self.effect, Interval):
            raise TypeError(f"effect must be an Interval, got {type(self.effect).__name__}")
        if isinstance(self.direction, bool) or self.direction not in (1, -1):
            raise ValueError(f"direction must be +1 or -1, got {self.direction!r}")

    def verdict(self) -> str:
        if self.tolerance is not None:
            return equivalence_verdict(self.effect, self.tolerance)
        return direction_verdict(self.effect, self.direction, self.margin)

    def seeds(self):
        """``(k, n)``: the seeds whose difference points the claimed way (past the margin; for
        non-inferiority, above ``-tolerance``), or ``None`` without per-seed values."""
        if self.tolerance is not None:
            return _seeds_above(self.effect, -self.tolerance)
        return seeds_in_direction(self.effect, self.direction, self.margin)

    def design(self, digits: int = 3) -> str:
        """E.g. "3 of 3 seeds; detectable ≥ 0.082": how many seeds point the claimed way and
        the smallest effect this design detects (:func:`pixelweight.stats.detectable_effect`)."""
        parts = []
        seeds = self.seeds()
        if seeds is not None:
            parts.append(f"{seeds[0]} of {seeds[1]} seeds")
        smallest = detectable_effect(self.effect)
        if smallest == smallest:  # not NaN
            parts.append(f"detectable ≥ {smallest:.{digits}f}")
        return "; ".join(parts)

    def text(self, digits: int = 3) -> str:
        """E.g. "Δ mean acc. = +0.111 [0.028, 0.194] (supported; 3 of 3 seeds)"."""
        seeds = self.seeds()
        count = f"; {seeds[0]} of {seeds[1]} seeds" if seeds is not None else ""
        return f"{self.what} = {_signed(self.effect, digits)} ({self.verdict()}{count})"


def _seeds_above(effect: Interval, threshold: float):
    if not effect.values:
        return None
    return int(sum(v > threshold for v in effect.values)), len(effect.values)


def _signed(effect: Interval, digits: int) -> str:
    if math.isnan(effect.mean):  # undefined (not testable at this scale): no "nan [nan, nan]"
        return "—"
    text = effect.format(digits)
    if not text.startswith("-") and float(text.split()[0]) > 0:  # not "+0.000" for a mean that rounds to 0
        text = "+" + text
    return text


def _cell(text: str) -> str:
    """Text for a Markdown table cell: ``|`` escaped, so a value cannot split the row."""
    return text.replace("|", "\\|")


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of a paper (or of the book), as tested in a chapter.

    Parameters
    ----------
    text : str
        The claim, one line, without its source tag or label (e.g. "recall loss raises mean
        accuracy over CE"). It is also the claim's key in the recorded verdicts.
    source : str
        Where it comes from, one of :data:`SOURCES`.
    ran : str
        What was run to test it (the comparison, the metric, the scope).
    verdict : str, optional
        The verdict, one of :data:`pixelweight.stats.VERDICTS`; computed from
        ``evidence`` when that is given (then leave it out).
    evidence : Evidence or sequence of Evidence, optional
        What decides the claim. One: its effect is the claim's effect and its verdict the
        claim's. Several (a composite claim): each is printed with its own verdict and the
        claim's verdict combines them by :func:`pixelweight.stats.combine_verdicts`.
    effect : Interval or str, optional
        The measured effect: an :class:`~pixelweight.stats.Interval` (printed ``mean [low,
        high]`` with ``digits`` decimals) or a text for effects that are not one interval.
    detail : str, optional
        More about the effect, printed after it (e.g. "+33% relative").
    label : str, optional
        The claim's label in the chapter's prose, e.g. "(a)".
    digits : int
        Decimals of an interval effect (default 3).
    record : bool
        Whether :meth:`ClaimsTable.record` records it for the landing page and the
        scorecard (default). ``False`` for a row that restates, at another scope, a claim
        recorded elsewhere in the chapter.
    primary : bool
        A primary claim is the paper's headline: the landing page and the scorecard count
        the primary claims of each chapter; the others are secondary (shown, not counted).
    """

    text: str
    source: str
    ran: str
    verdict: Optional[str] = None
    effect: Union[Interval, str, None] = None
    detail: str = ""
    label: str = ""
    digits: int = 3
    record: bool = True
    evidence: Union[Evidence, Sequence[Evidence], None] = None
    primary: bool = False

    def __post_init__(self):
        if self.evidence is not None:
            parts = (self.evidence,) if isinstance(self.evidence, Evidence) else tuple(self.evidence)
            if not parts or not all(isinstance(e, Evidence) for e in parts):
                raise TypeError("evidence must be an Evidence or a non-empty sequence of Evidence")
            if self.verdict is not None:
                raise ValueError("give a claim its evidence or its verdict, not both")
            object.__setattr__(self, "evidence", parts)
            object.__setattr__(self, "verdict", combine_verdicts([e.verdict() for e in parts]))
            if self.effect is None:
                effect = parts[0].effect if len(parts) == 1 else "; ".join(e.text(self.digits) for e in parts)
                object.__setattr__(self, "effect", effect)
        elif self.verdict is None:
            raise ValueError("a claim needs its evidence or its verdict")
        _one_line(self.text, "text")
        _one_line(self.ran, "ran")
        _one_line(self.detail, "detail", empty=True)
        _one_line(self.label, "label", empty=True)
        if self.source not in SOURCES:
            raise ValueError(f"source {self.source!r} is not one of {', '.join(SOURCES)}")
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {', '.join(VERDICTS)}")
        if self.effect is not None and not isinstance(self.effect, (Interval, str)):
            raise TypeError(f"effect must be an Interval, a str or None, got {type(self.effect).__name__}")
        if isinstance(self.effect, str):
            _one_line(self.effect, "effect")
        if isinstance(self.digits, bool) or not isinstance(self.digits, int) or not 0 <= self.digits <= 8:
            raise ValueError(f"digits must be an int in [0, 8], got {self.digits!r}")
        for flag in ("record", "primary"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be a bool, got {type(getattr(self, flag)).__name__}")

    def effect_text(self) -> str:
        """The effect as printed: ``+0.111 [0.028, 0.194]`` (with the detail), or "—" where there is
        none or it is undefined (a NaN interval: not testable at this scale)."""
        if self.effect is None:
            text = "—"
        elif isinstance(self.effect, Interval):
            text = _signed(self.effect, self.digits)
        else:
            text = self.effect
        return f"{text} ({self.detail})" if self.detail else text

    def title(self) -> str:
        """The claim as the table shows it: its label, then its text (primary claims in bold)."""
        text = f"**{self.text}**" if self.primary else self.text
        return f"{self.label} {text}" if self.label else text

    def design_text(self) -> str:
        """Beside the verdict: the seeds in the claimed direction and the smallest detectable
        effect of a claim decided by one :class:`Evidence` (composite claims print them per
        part in the effect)."""
        if self.evidence is not None and len(self.evidence) == 1:
            return self.evidence[0].design(self.digits)
        return ""


@dataclasses.dataclass(frozen=True)
class Check:
    """A numerical identity the chapter checks (e.g. a loss's limits): not a claim of the
    paper, so it has no verdict, only whether the largest error is within the tolerance.

    Parameters
    ----------
    text : str
        What is checked, one line.
    ran : str
        On what (e.g. "the CE of a trained model on 32 test images").
    max_error : float
        The largest (relative or absolute, as ``ran`` says) error found.
    tolerance : float
        The largest error that passes.
    """

    text: str
    ran: str
    max_error: float
    tolerance: float

    def __post_init__(self):
        _one_line(self.text, "text")
        _one_line(self.ran, "ran")
        for name in ("max_error", "tolerance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, got {type(value).__name__}")
        if not self.tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0, got {self.tolerance}")

    @property
    def passed(self) -> bool:
        """Within the tolerance (a NaN error fails)."""
        return bool(self.max_error <= self.tolerance)


@dataclasses.dataclass(frozen=True)
class ClaimsTable:
    """A chapter's claims: rendered as its claims table, recorded for the landing page.

    Parameters
    ----------
    chapter : str
        The chapter's folder under ``notebooks/`` (e.g. ``"02_recall"``).
    claims : sequence of Claim
        The rows, in the order of the chapter's prose.
    budget : str
        The budget the claims were tested at, a few words (e.g. "`ci` (early training):
        450 steps, 3 seeds", :meth:`pixelweight.profiles.Profile.budget`); the scorecard
        prints it beside each claim.
    scope : str, optional
        The budget with the scale of the experiment, one line (e.g. with "32x32 scenes,
        width-16 U-Net", :meth:`pixelweight.chapters.Setup.describe`); the chapter's table
        states it above its rows (the budget alone when it is empty).
    section : str
        The anchor of the page section that shows the table (the slug of its heading, e.g.
        ``"claims"`` for ``## Claims``); the scorecard links there.
    checks : sequence of Check
        The chapter's numerical identities, shown in their own table below the claims and
        not recorded as claims.
    scale : str, optional
        The testbed and model, a few words (e.g. "DigitScenes 32x32, width-16 U-Net",
        :meth:`pixelweight.chapters.Setup.scale_text`): recorded with every claim, so that
        each scorecard row states its scope beside its budget.
    stale : bool
        The claims were judged on committed records that the library's code has changed
        since (:func:`pixelweight.chapters.converged_table`): recorded with every claim, so
        that the landing page and the scorecard never show their verdicts as current.
    """

    chapter: str
    claims: Sequence[Claim]
    budget: str
    scope: str = ""
    section: str = "claims"
    checks: Sequence[Check] = ()
    scale: str = ""
    stale: bool = False

    def __post_init__(self):
        if not isinstance(self.chapter, str) or not _CHAPTER_RE.match(self.chapter):
            raise ValueError(f"chapter must be the chapter's folder name under notebooks/, got {self.chapter!r}")
        claims = tuple(self.claims)
        if not claims:
            raise ValueError("a claims table needs at least one claim")
        for claim in claims:
            if not isinstance(claim, Claim):
                raise TypeError(f"claims must be Claim objects, got {type(claim).__name__}")
        texts = [c.text for c in claims]
        duplicated = sorted({t for t in texts if texts.count(t) > 1})
        if duplicated:
            raise ValueError(f"a claim is listed twice: {duplicated[0]!r}")
        object.__setattr__(self, "claims", claims)
        checks = tuple(self.checks)
        for check in checks:
            if not isinstance(check, Check):
                raise TypeError(f"checks must be Check objects, got {type(check).__name__}")
        object.__setattr__(self, "checks", checks)
        _one_line(self.budget, "budget")
        _one_line(self.scope, "scope", empty=True)
        _one_line(self.scale, "scale", empty=True)
        if not isinstance(self.stale, bool):
            raise TypeError(f"stale must be a bool, got {type(self.stale).__name__}")
        if not isinstance(self.section, str) or not _SECTION_RE.match(self.section):
            raise ValueError(f"section must be a heading anchor such as 'claims', got {self.section!r}")

    def markdown(self) -> str:
        """The claims table as MyST Markdown (verdict labels are sphinx-design badges),
        followed by the table of the chapter's numerical checks when it has any."""
        lines = [
            f"Tested at: {_cell(self.scope or self.budget)}."
            + (" Primary claims (the paper's headline) in bold." if any(c.primary for c in self.claims) else ""),
            "",
            "| Claim | Source | What we ran | Effect [95% CI] | Verdict |",
            "|---|---|---|---|---|",
        ]
        for c in self.claims:
            design = c.design_text()
            badge = verdict_badge(c.verdict) + (f" ({design})" if design else "")
            cells = [c.title(), f"[{c.source}]", c.ran, c.effect_text(), badge]
            lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
        if self.checks:
            lines += ["", "Numerical checks (identities of the method, not claims of the paper):", "",
                      "| Check | On | Largest error | Tolerance | Result |", "|---|---|---|---|---|"]
            for k in self.checks:
                result = "{bdg-success}`✓ passes`" if k.passed else "{bdg-danger}`✗ fails`"
                cells = [k.text, k.ran, f"{k.max_error:.1e}", f"{k.tolerance:.0e}", result]
                lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
        return "\n".join(lines)

    def show(self) -> None:
        """Display the table in the notebook (and the book)."""
        from .book import markdown

        markdown(self.markdown())

    def verdicts(self) -> dict:
        """``{claim text: verdict}`` of the claims to record."""
        return {c.text: c.verdict for c in self.claims if c.record}

    def record(self, results_dir: Union[str, Path]) -> Optional[Path]:
        """Record the verdicts, with source, what was run, effect, budget, scale and section, in
        ``results_dir`` (:func:`pixelweight.book.record_verdicts`). Returns the file's path,
        or ``None`` when no claim of the table is to be recorded."""
        from .book import record_verdicts

        details = {
            c.text: {"source": c.source, "ran": c.ran, "effect": c.effect_text(), "budget": self.budget,
                     "scale": self.scale, "stale": "yes" if self.stale else "", "section": self.section, "label": c.label, "role": "primary" if c.primary else "secondary",
                     "design": c.design_text()}
            for c in self.claims if c.record
        }
        if not details:
            return None
        return record_verdicts(results_dir, self.chapter, self.verdicts(), details=details)
