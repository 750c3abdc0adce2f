"""Has training converged? The plateau rule the harness applies and records
(:func:`measure_plateau`, which states the rule)."""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, Dict, Mapping, Optional, Sequence

from .._validation import check_float, check_int

#: The fewest evaluations in the window that can show a plateau.
MIN_EVALUATIONS = 3
RULE = "max - min of the validation evaluations in the window <= tolerance (at least 3 evaluations)"


def plateau_key(metric: str) -> str:
    """The history key of a validation metric: ``"miou"`` or ``"val_miou"`` → ``"val_miou"``."""
    if not isinstance(metric, str):
        raise TypeError(f"plateau_metric must be a str or None, got {type(metric).__name__}")
    if not metric.strip() or metric.strip() != metric or metric == "val_":
        raise ValueError(f"plateau_metric must be a metric name such as 'miou', got {metric!r}")
    return metric if metric.startswith("val_") else f"val_{metric}"


def plateau_window(steps: int, window: float) -> tuple:
    r"""The first and last step of the window: :math:`(T - \lfloor wT \rfloor, T)`."""
    check_int(steps, "steps", minimum=1)
    window = check_float(window, "plateau_window", minimum=0.0, maximum=1.0, min_inclusive=False)
    return steps - math.floor(window * steps + 1e-9), steps


def not_measurable(metric: str, steps: int, window: float, tolerance: float, reason: str) -> Dict[str, Any]:
    """The plateau entry of a run where the rule cannot be applied, with the ``reason``."""
    first, last = plateau_window(steps, window)
    return {"metric": plateau_key(metric), "rule": RULE, "window": [first, last],
            "window_fraction": float(window), "tolerance": float(tolerance), "steps": [], "values": [],
            "change": None, "drift": None, "reached": None, "reason": reason}


def measure_plateau(
    history: Sequence[Mapping[str, Any]],
    metric: str,
    steps: int,
    window: float = 0.25,
    tolerance: float = 0.01,
) -> Dict[str, Any]:
    r"""Apply the plateau rule to a training history: has the validation metric settled?

    The rule: over the last fraction :math:`w` of training (the *window*, steps
    :math:`t \in [T - \lfloor wT \rfloor, T]` of a run of :math:`T` steps), take the
    validation evaluations :math:`m_1, \dots, m_k` of the headline metric that the history
    holds. With :math:`k \ge 3`, the run has reached its plateau when

    .. math:: \Delta = \max_i m_i - \min_i m_i \le \tau,

    the tolerance (absolute, in the metric's units; e.g. 0.01 mIoU). The *range* is the
    measure, not the net change :math:`m_k - m_1`: a metric that rises and falls back within
    the window (noise, an unstable learning rate) has a small net change yet has not
    settled; the range is small only when *every* evaluation of the window lies in a band
    of width :math:`\tau`. The signed net change is recorded too (``drift``: positive while
    the metric still rises). Fewer than three evaluations cannot tell a plateau from a line
    through two points, so the rule is then *not measurable* (``reached = None``, with the
    reason), as it is without a validation set or without evaluations during training
    (``eval_every = 0``). The rule reads the history after the fact: it changes no metric of
    the run.

    Parameters
    ----------
    history : sequence of mappings
        The entries of ``history`` of a :class:`~pixelweight.train.TrainResult`: each has a
        ``"step"``, and the evaluation steps a ``"val_<metric>"``.
    metric : str
        The headline metric, ``"miou"`` or ``"val_miou"``; its values must be real numbers.
    steps : int
        :math:`T`, the run's number of steps.
    window : float in (0, 1], default 0.25
        :math:`w`, the fraction of the steps at the end that the rule looks at.
    tolerance : float >= 0, default 0.01
        :math:`\tau`, the largest range that counts as a plateau.

    Returns
    -------
    dict
        ``metric`` (the history key), ``rule``, ``window`` (its first and last step),
        ``window_fraction``, ``tolerance``, ``steps`` and ``values`` (the evaluations in
        the window), ``change`` (:math:`\max - \min`), ``drift`` (last - first),
        ``reached`` (``change <= tolerance``) and ``reason``. When the rule cannot be
        applied (fewer than 3 evaluations, a non-numeric or non-finite value) ``change``,
        ``drift`` and ``reached`` are ``None`` and ``reason`` says why.

    Examples
    --------
    >>> from pixelweight.train import measure_plateau
    >>> history = [{"step": s, "val_miou": v} for s, v in
    ...            [(25, 0.50), (50, 0.70), (75, 0.795), (100, 0.80), (125, 0.802), (150, 0.80),
    ...             (175, 0.804), (200, 0.803)]]
    >>> p = measure_plateau(history, "miou", steps=200, window=0.25, tolerance=0.01)
    >>> p["window"], p["steps"], p["reached"], round(p["change"], 3)
    ([150, 200], [150, 175, 200], True, 0.004)
    """
    if not isinstance(history, Sequence) or not all(isinstance(h, Mapping) for h in history):
        raise TypeError("history must be a sequence of mappings (the entries of TrainResult.history)")
    key = plateau_key(metric)
    tolerance = check_float(tolerance, "plateau_tolerance", minimum=0.0)
    first, last = plateau_window(steps, window)
    chosen = [h for h in history if key in h and isinstance(h.get("step"), int) and first <= h["step"] <= last]
    result = not_measurable(key, steps, window, tolerance, reason="")
    result["steps"] = [h["step"] for h in chosen]
    values = [h[key] for h in chosen]
    if any(isinstance(v, bool) or not isinstance(v, Real) for v in values):
        result["values"] = []
        result["reason"] = f"{key} is not a number (a per-class list?): choose a scalar metric"
        return result
    result["values"] = [float(v) for v in values]
    if len(values) < MIN_EVALUATIONS:
        result["reason"] = (f"only {len(values)} evaluation(s) of {key} in the window [{first}, {last}] "
                            f"({MIN_EVALUATIONS} needed): evaluate more often (eval_every) or widen "
                            "plateau_window")
        return result
    if not all(math.isfinite(v) for v in result["values"]):
        result["reason"] = f"a value of {key} in the window is NaN or infinite"
        return result
    change = max(result["values"]) - min(result["values"])
    result.update(change=change, drift=result["values"][-1] - result["values"][0],
                  reached=change <= tolerance, reason=None)
    return result


def run_plateau(config, history: Sequence[Mapping[str, Any]], has_val: bool) -> Optional[Dict[str, Any]]:
    """The plateau entry :func:`~pixelweight.train.train` records for ``config``'s rule:
    ``None`` when ``config.plateau_metric`` is ``None``."""
    if config.plateau_metric is None:
        return None
    args = (config.plateau_metric, config.steps, config.plateau_window, config.plateau_tolerance)
    if not has_val:
        return not_measurable(*args, reason="no val_set: the harness has nothing to measure")
    if not config.eval_every:
        return not_measurable(*args, reason="eval_every = 0: the validation set is evaluated "
                                            "only once, at the end")
    return measure_plateau(history, *args)
