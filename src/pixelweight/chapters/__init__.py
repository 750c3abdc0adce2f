"""The book's chapters: one module per chapter, holding its typed setup and its analyses.

A paper lives in three places that name each other: its idea module (e.g.
``pixelweight.losses.recall``), its chapter module here (:mod:`pixelweight.chapters.recall`)
and its folder of notebooks (``notebooks/02_recall``). A chapter module declares

- ``STAGES``: its experiments as :class:`Stage` objects — at each profile (``ci``, ``full``)
  a :class:`Scale` with the budget (:class:`~pixelweight.profiles.Profile`), the data
  (:class:`DataSpec`) and the model (:class:`ModelSpec`) — and the arms they compare
  (:class:`Arm`: a registered loss and its options);
- ``CHAPTER`` (a :class:`Chapter`) and ``setup = CHAPTER.setup``: a notebook asks
  ``setup("headline", profile, device=device, results_dir=results_dir, chapter=chapter)``
  and gets a :class:`Setup`: the splits, model and metric factories, the losses, the
  record config (which the specs write themselves) and ``run()``;
- its claims: functions that build the chapter's :class:`~pixelweight.claims.ClaimsTable`
  from the effects a notebook measured (the claim texts, their sources and how each is
  judged live here, once);
- the analysis helpers only that chapter uses.

The drivers every chapter shares (:func:`run_seeds`, :func:`per_class_frame`, ...) are in
``pixelweight.chapters._base`` and exported here.
"""

from __future__ import annotations

import importlib

from ._base import (
    DATA_SEEDS,
    Arm,
    Chapter,
    CommittedRun,
    Converged,
    DataSpec,
    ModelSpec,
    Scale,
    Setup,
    Splits,
    Stage,
    check_stage,
    committed_status,
    converged_table,
    group_metric_frame,
    history_curve,
    metric_frame,
    per_class_frame,
    run_seeds,
    train_config,
)

__all__ = [
    "CHAPTERS",
    "DATA_SEEDS",
    "Arm",
    "Chapter",
    "CommittedRun",
    "Converged",
    "DataSpec",
    "ModelSpec",
    "Scale",
    "Setup",
    "Splits",
    "Stage",
    "check_stage",
    "committed_status",
    "converged_table",
    "get_chapter",
    "group_metric_frame",
    "history_curve",
    "metric_frame",
    "per_class_frame",
    "run_seeds",
    "train_config",
]

#: The chapter modules, by the chapter's folder under ``notebooks/``.
CHAPTERS = {
    "00_testbed": "testbed",
    "01_wfm": "wfm",
    "02_recall": "recall",
    "03_zoom": "zoom",
    "04_lmp": "lmp",
    "05_spectral": "spectral",
}


def get_chapter(folder: str):
    """The chapter module of ``folder`` (e.g. ``"02_recall"`` → :mod:`pixelweight.chapters.recall`)."""
    if folder not in CHAPTERS:
        raise ValueError(f"no chapter module for {folder!r}; chapters: {sorted(CHAPTERS)}")
    module = importlib.import_module(f"{__name__}.{CHAPTERS[folder]}")
    if module.CHAPTER.folder != folder:  # pragma: no cover - a misfiled module
        raise RuntimeError(f"{module.__name__} declares chapter {module.CHAPTER.folder!r}, not {folder!r}")
    return module
