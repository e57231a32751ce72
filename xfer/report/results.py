"""The studies' records: what ``results.json`` holds, what the renderer and the console read by attribute.

A study is many training runs, each timed, summarised per protocol and mode;
the file on disk keeps the keys it always had (``to_json`` / ``from_json``).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from xfer.bench.report import BenchReport, Environment
from xfer.bench.runner import ScalingPoint
from xfer.records import Record


def _std(xs: list[float]) -> float:
    return statistics.pstdev(xs) if len(xs) > 1 else 0.0


@dataclass
class StudyRun(Record):
    """One mode x seed x protocol: its training run's scores and its timed test pass."""

    protocol: str
    mode: str
    seed: int
    split: str
    compare: bool
    model: str
    test_accuracy: float
    bench_accuracy: float | None
    per_class: dict[str, float | None]
    confusion: list[list[int]]
    history: list[dict[str, float]]
    test_time_s: float
    images_per_s: float
    test_size: int
    train_s: float
    trainable_params: int
    frozen_params: int
    test_index: list[int]
    predictions: list[int]
    classes: list[str]
    index: int = 0  # which source trained it: 0 the study's, k the k-th --compare-source


@dataclass
class ModeSummary(Record):
    """A mode's runs on one protocol, over seeds: mean and spread of accuracy and test time."""

    n: int
    acc_mean: float
    acc_std: float
    time_mean: float
    time_std: float
    images_per_s: float
    per_class: dict[str, float]
    test_size: int
    splits: list[str]

    @classmethod
    def of(cls, rs: list[StudyRun]) -> ModeSummary:
        accs, times = [r.test_accuracy for r in rs], [r.test_time_s for r in rs]
        per_class = {c: statistics.mean([v for r in rs if (v := r.per_class[c]) is not None] or [0.0])
                     for c in rs[0].per_class}
        return cls(len(rs), statistics.mean(accs), _std(accs), statistics.mean(times), _std(times),
                   statistics.mean(r.images_per_s for r in rs), per_class, rs[0].test_size, sorted({r.split for r in rs}))


Summary = dict[str, dict[str, ModeSummary]]  # protocol -> mode -> summary


def summarize(runs: list[StudyRun]) -> Summary:
    """Runs grouped by protocol, then mode (in the order they ran), each group summarised."""
    groups: dict[str, dict[str, list[StudyRun]]] = {}
    for r in runs:
        groups.setdefault(r.protocol, {}).setdefault(r.mode, []).append(r)
    return {p: {m: ModeSummary.of(rs) for m, rs in modes.items()} for p, modes in groups.items()}


@dataclass
class SourceInfo(Record):
    """What a source model was pretrained on, from its own metadata."""

    path: str
    dataset: str
    dataset_size: int | None
    framework: str | None = None

    @property
    def label(self) -> str:
        return self.dataset + (f", {self.dataset_size:,} digits" if self.dataset_size else "")

    @property
    def title(self) -> str:
        """The source as a column header: its file, framework and training data."""
        return f"{Path(self.path).stem} ({self.framework or 'mxnet'}, {self.label})"


@dataclass
class DataInfo(Record):
    images: int
    classes: list[str]
    groups: list[str]
    layout: str
    source: str


@dataclass
class StudyValue(Record):
    """A row of the study's own Table 1."""

    accuracy: float
    test_time_s: float


@dataclass
class StudySettings(Record):
    modes: list[str]
    seeds: list[int]
    protocols: list[str]
    epochs: int
    batch_size: int
    lr: float | None
    input_size: list[int]
    channels: int
    head: list[int]
    data: str | None
    source: str | None
    compare_source: list[str] | str | None


@dataclass
class StudyResult(Record):
    """``xfer experiments``'s result (``results.json``): the plan's runs, their summaries, the bench, the scaling."""

    OMIT_NONE = False

    name: str
    created: str
    settings: StudySettings
    sources: list[SourceInfo]
    data: DataInfo
    study: dict[str, StudyValue]
    summary: Summary
    runs: list[StudyRun]
    summary_compare: Summary | None
    bench: BenchReport
    scaling: list[ScalingPoint]
    env: Environment
    wall_s: float
    summaries_compare: list[Summary] | None = None  # one per --compare-source, in order (summary_compare: the first)

    @property
    def by_source(self) -> list[Summary]:
        """Table 1's summaries, one per source: the study's, then each compared source's."""
        return [self.summary, *(self.summaries_compare or ([self.summary_compare] if self.summary_compare else []))]

    @property
    def showcase(self) -> StudyRun:
        """The run the report shows and benches: random split, frozen, first seed (else the first run)."""
        main = [r for r in self.runs if not r.compare]
        return next((r for r in main if r.protocol == "random" and r.mode == "frozen"), main[0])


@dataclass
class DanRun(Record):
    variant: str
    seed: int
    alpha: float
    scheme: str
    test_accuracy: float
    landmark_nme: float | None
    history: list[dict[str, float]]
    model: str
    stages: int = 1
    beta: float = 1.0
    nme_stages: list[float] | None = None  # each stage's test NME, first to last
    manual_nme_stages: list[float] | None = None  # real faces: each stage's NME on the hand-annotated photos


@dataclass
class DanSummary(Record):
    """A variant over its seeds; accuracy is None where the emotion head did not train (beta 0), NME where the
    landmarks did not (alpha 0)."""

    n: int
    acc_mean: float | None
    acc_std: float | None
    nme_mean: float | None
    nme_std: float | None
    stages: int = 1
    nme_stages: list[float] | None = None  # mean test NME of each stage's estimate
    manual_nme_stages: list[float] | None = None  # real faces: mean NME per stage on the hand-annotated photos

    @classmethod
    def of(cls, rs: list[DanRun]) -> DanSummary:
        accs = [r.test_accuracy for r in rs if r.beta > 0]
        nmes = [r.landmark_nme for r in rs if r.landmark_nme is not None and r.alpha > 0]
        per = [r.nme_stages for r in rs if r.nme_stages and r.alpha > 0]
        manual = [r.manual_nme_stages for r in rs if r.manual_nme_stages]
        return cls(len(rs), statistics.mean(accs) if accs else None, _std(accs) if accs else None,
                   statistics.mean(nmes) if nmes else None, _std(nmes) if nmes else None, rs[0].stages if rs else 1,
                   [statistics.mean(v) for v in zip(*per)] if per else None,
                   [statistics.mean(v) for v in zip(*manual)] if manual else None)


@dataclass
class DanSettings(Record):
    seeds: list[int]
    epochs: int
    alpha: float
    width: float
    input_size: list[int]
    data: str | None
    schedule: str = "joint"
    scheme_stages: int | None = None  # the stage count the label schemes ran at (the best multi-task one)


@dataclass
class DanStudyResult(Record):
    """``xfer experiments --study dan``'s result: single- vs multi-task and the FER+ label schemes."""

    name: str
    settings: DanSettings
    summary: dict[str, DanSummary]
    runs: list[DanRun]
    wall_s: float
    study: str = "dan"
