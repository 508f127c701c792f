"""How a model and its face finder do group by group, on FairFace (race, gender, age group).

For every photo: whether a face was found (and how: by the detector, or the photo taken as a
face crop), the model's ``Male`` decision against the annotated gender, and its probability of
``Young``. Then per group: the detection rate, the ``Male`` accuracy (on the photos with a face),
and the mean probability of ``Young`` per age group, as tables (JSON, Markdown) and a figure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtfap.applications.analyze import Analyzer
from mtfap.data.fairface import AGE_GROUPS, RACES
from mtfap.io import atomic_write_text, save_figure, write_json


def group_outcomes(analyzer: Analyzer, dataset, *, batch_size: int = 64,
                   progress: bool = True) -> dict:
    """Per photo of the FairFace ``dataset``: found (bool), detector, P(Male), P(Young)."""
    names = analyzer.predictor.attributes
    male, young = names.index("Male"), names.index("Young") if "Young" in names else None
    rows = []
    for result in analyzer.analyze_dataset(dataset, batch_size=batch_size, progress=progress):
        face = result.faces[0] if result.faces else None
        rows.append((face is not None, face.detector if face else "",
                     face.probabilities[male] if face else np.nan,
                     face.probabilities[young] if face and young is not None else np.nan,
                     face.thresholds[male] if face else np.nan))
    found, detector, p_male, p_young, threshold = map(np.array, zip(*rows))
    groups = [dataset.meta["groups"][key] for key in dataset.keys]
    return {"found": found, "detector": detector, "p_male": p_male.astype(float),
            "p_young": p_young.astype(float), "threshold": threshold.astype(float),
            "male": dataset.labels[:, 0].astype(bool),
            **{name: np.array([g[name] for g in groups]) for name in ("race", "age", "gender")}}


def group_report(outcomes: dict) -> dict:
    """Detection rate, ``Male`` accuracy and mean P(Young) by group (see the module docstring)."""
    found, male = outcomes["found"], outcomes["male"]
    correct = (outcomes["p_male"] >= outcomes["threshold"]) == male

    def summary(select) -> dict:
        hit = select & found
        return {"photos": int(select.sum()), "found": float(found[select].mean()),
                "by_detector": float((select & found & (outcomes["detector"] != "crop")).sum()
                                     / max(select.sum(), 1)),
                "male_accuracy": float(correct[hit].mean()) if hit.any() else None,
                "faces": int(hit.sum())}

    everyone = np.ones(len(found), bool)
    by_race = {race: summary(outcomes["race"] == race) for race in RACES}
    by_gender = {g: summary(outcomes["gender"] == g) for g in ("Female", "Male")}
    by_race_gender = {f"{race} / {g}": summary((outcomes["race"] == race)
                                               & (outcomes["gender"] == g))
                      for race in RACES for g in ("Female", "Male")}
    young = {}
    for age in AGE_GROUPS:
        pick = (outcomes["age"] == age) & found
        young[age] = {"faces": int(pick.sum()),
                      "mean_p_young": float(np.nanmean(outcomes["p_young"][pick]))
                      if pick.any() else None}
    adults = np.isin(outcomes["age"], AGE_GROUPS[3:])
    accuracies = [v["male_accuracy"] for v in by_race.values() if v["male_accuracy"] is not None]
    return {"all": summary(everyone), "adults_20_plus": summary(adults),
            "by_race": by_race, "by_gender": by_gender,
            "by_race_and_gender": by_race_gender, "young_by_age": young,
            "male_accuracy_gap_by_race": max(accuracies) - min(accuracies) if accuracies else None}


def markdown_report(report: dict, title: str) -> str:
    """The report's tables in Markdown (percentages)."""
    def pct(value):
        return "-" if value is None else f"{100 * value:.1f}"
    lines = [f"### {title}", "", "| group | photos | face found | by the detector | Male accuracy |",
             "| --- | ---: | ---: | ---: | ---: |"]
    rows = [("all", report["all"]), ("age 20 and over", report["adults_20_plus"])]
    rows += list(report["by_gender"].items()) + list(report["by_race"].items())
    rows += list(report["by_race_and_gender"].items())
    for name, row in rows:
        lines.append(f"| {name} | {row['photos']} | {pct(row['found'])} | "
                     f"{pct(row['by_detector'])} | {pct(row['male_accuracy'])} |")
    lines += ["", f"Largest gap in Male accuracy between races: "
                  f"{pct(report['male_accuracy_gap_by_race'])} points.", "",
              "| age group | faces | mean P(Young) |", "| --- | ---: | ---: |"]
    for age, row in report["young_by_age"].items():
        mean = row["mean_p_young"]
        lines.append(f"| {age} | {row['faces']} | {'-' if mean is None else f'{mean:.3f}'} |")
    return "\n".join(lines) + "\n"


def plot_report(report: dict, path: str | Path, title: str) -> list[Path]:
    """Male accuracy by race and gender, and mean P(Young) by age group."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    x = np.arange(len(RACES))
    for offset, gender in ((-0.2, "Female"), (0.2, "Male")):
        values = [report["by_race_and_gender"][f"{race} / {gender}"]["male_accuracy"] or 0
                  for race in RACES]
        left.bar(x + offset, 100 * np.array(values), width=0.4, label=gender)
    left.set_xticks(x, [r.replace("_", " ") for r in RACES], rotation=30, ha="right",
                    fontsize=8)
    left.set(ylabel="Male accuracy (%)", ylim=(50, 100), title="gender, by race")
    left.legend(fontsize=8, loc="lower right")
    ages = list(report["young_by_age"])
    right.plot(ages, [report["young_by_age"][a]["mean_p_young"] or np.nan for a in ages], "o-")
    right.set(ylabel="mean P(Young)", ylim=(0, 1), title="Young, by age group")
    right.tick_params(axis="x", rotation=30, labelsize=8)
    for axis in (left, right):
        axis.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def write_group_report(analyzer: Analyzer, dataset, out: str | Path, title: str,
                       progress: bool = True) -> dict:
    """Run :func:`group_outcomes` and write ``groups.json``, ``groups.md``, ``groups.png``."""
    out = Path(out)
    outcomes = group_outcomes(analyzer, dataset, progress=progress)
    report = group_report(outcomes)
    write_json(out / "groups.json", {"title": title, **report})
    atomic_write_text(out / "groups.md", markdown_report(report, title))
    plot_report(report, out / "groups.png", title)
    return report
