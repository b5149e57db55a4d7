"""``cvae sweep status``: what a study holds (trials by state, the best, the running ones with their
progress, every finished trial), what mattered (fANOVA and PED-ANOVA importances), and the tables
and lines it prints."""

from __future__ import annotations

from typing import Any

from cvae import history
from cvae.history import source_of
from cvae.sweep.progress import TrialProgress, running_table, trial_progress, worker_label
from cvae.sweep.study import quiet_experimental, superseded
from cvae.sweep.text import metric_header, param_words, params_text


def status(study, importance: bool = True) -> dict[str, Any]:
    """Trials by state, the best trial, the running trials with their epoch, every finished trial,
    and (``importance``) what mattered."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {s.name: 0 for s in TrialState}
    for t in trials:
        counts[t.state.name] += 1
    out: dict[str, Any] = {
        "study": study.study_name,
        "metric": (study.metric_names or ["value"])[0],
        "direction": study.direction.name.lower(),
        "n_trials": len(trials),
    }
    out["states"] = counts
    out["replaced"] = sorted(superseded(trials))
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    out["best"] = None
    if complete:
        b = study.best_trial
        out["best"] = {"number": b.number, "value": b.value, "params": b.params, "run_dir": b.user_attrs.get("run_dir")}
    out["epochs_spent"] = sum(
        int(t.user_attrs.get("epochs_done", 0)) for t in trials if t.number not in out["replaced"]
    )
    running = []
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        p = trial_progress(t, out["metric"])  # as `cvae sweep run` shows it live
        running.append(
            {
                "number": t.number,
                "label": p.label,
                "params": t.params,
                "epoch": p.epoch,
                "epochs": p.epochs,
                "step": p.step,
                "steps": p.steps,
                "score": p.score,
                "score_epoch": p.score_epoch,
                "started": p.started,
                "run_dir": t.user_attrs.get("run_dir"),
                "worker": t.user_attrs.get("worker"),
            }
        )
    out["running"] = running
    out["failed"] = [
        {"number": t.number, "reason": t.user_attrs.get("fail_reason", "worker died (heartbeat)")}
        for t in trials
        if t.state == TrialState.FAIL and t.number not in out["replaced"]
    ]
    out["trials"] = [
        {
            "number": t.number,
            "label": t.user_attrs.get("label"),
            "state": t.state.name.lower(),
            "value": t.value,
            "vs_mean_frame": t.user_attrs.get("vs_mean_frame"),
            "epochs_done": t.user_attrs.get("epochs_done"),
            "params": t.params,
        }
        for t in trials
        if t.state.is_finished() and t.number not in out["replaced"]
    ]
    out["importance"], out["importance_note"] = importances(study, complete) if importance else ({}, None)
    out["importance_ped_anova"] = ped_anova_importances(study, complete) if importance and out["importance"] else {}
    return out


# Fewer complete trials than this, or than this many per searched parameter: the importances are rough.
MIN_TRIALS, MIN_TRIALS_PER_PARAM = 10, 2


def importances(study, complete: list) -> tuple[dict[str, float], str | None]:
    """Each searched parameter's share of the objective's variance over the complete trials
    (``optuna.importance``, fANOVA, seeded), and a note when there are too few trials for that to
    mean much (or to be computed at all)."""
    import optuna

    n_params = len({k for t in complete for k in t.params})
    if len(complete) < 3 or n_params == 0:
        return {}, f"{len(complete)} complete trials: too few to tell which parameter mattered"
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        with quiet_experimental():
            values = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError) as e:  # e.g. every trial scored the same: no variance to share
        return {}, f"no importances: {e}"
    note = None
    enough = max(MIN_TRIALS, MIN_TRIALS_PER_PARAM * n_params)
    if len(complete) < enough:
        note = (
            f"{len(complete)} complete trials for {n_params} parameters: the importances are rough "
            f"(read them as a ranking at most; {enough} or more complete trials say more)"
        )
    return {k: float(v) for k, v in values.items()}, note


def ped_anova_importances(study, complete: list) -> dict[str, float]:
    """Each searched parameter's importance as optuna-dashboard 0.21 computes it: PED-ANOVA (how
    differently the parameter is set in the best 10% of the complete trials than in all of them; no
    randomness), on the objective turned to "lower is better" as the dashboard does. It answers another
    question than fANOVA's share of the variance; on few trials the two often disagree. {} where it
    cannot be computed."""
    import warnings

    import optuna

    if len(complete) < 2:
        return {}
    sign = -1.0 if study.direction.name == "MAXIMIZE" else 1.0
    try:
        with quiet_experimental(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PED-ANOVA warns that it ranks for low target values: so it does
            values = optuna.importance.get_param_importances(
                study, target=lambda t: sign * t.value, evaluator=optuna.importance.PedAnovaImportanceEvaluator()
            )
    except (RuntimeError, ValueError):
        return {}
    return {k: float(v) for k, v in values.items()}


def status_tables(st: dict[str, Any]) -> list:
    """``status``'s result as ``cvae sweep status`` prints it: tables and lines (``Fields``), in order."""
    from cvae.terminal import Col, Fields, table

    out: list = [table(f"study {st['study']} ({st['direction']})", ["state", Col("trials", numeric=True)],
                       [[s.lower(), n] for s, n in st["states"].items() if n])]  # fmt: skip
    if st["best"]:
        b = st["best"]
        score = f"{st['metric']} {history.with_unit(st['metric'], b['value'])}"
        where = [source_of(st["metric"])] if source_of(st["metric"]) else []
        out.append(Fields([f"best: trial {b['number']}", score, *where, f"run folder {b['run_dir']}"]))
        out.append(Fields(param_words(b["params"]), lead="  "))
    if st["running"]:
        running = [
            TrialProgress(r["number"], r.get("label"), worker_label(r["worker"]), r["params"], r["epoch"] or 0,
                          r["epochs"], r.get("step") or 0, r.get("steps"), r.get("score"), r.get("score_epoch"),
                          r.get("started"))
            for r in st["running"]
        ]  # fmt: skip
        out.append(running_table(running, st["metric"], params=True))
    out += [Fields([f"failed trial {f['number']}: {f['reason']}"]) for f in st["failed"]]
    out.append(Fields([f"epochs trained: {st['epochs_spent']}"]))
    if st["trials"]:
        out.append(trials_table(st))
    if st["importance"]:
        title = "what mattered: each parameter's importance over the complete trials"
        ped = st.get("importance_ped_anova") or {}
        rows = [[k, f"{v:.2f}", f"{ped[k]:.2f}" if k in ped else "-"] for k, v in st["importance"].items()]
        columns = ["parameter", Col("fANOVA", numeric=True), Col("PED-ANOVA", numeric=True)]
        out.append(table(title, columns, rows, notes=[IMPORTANCE_LEGEND]))
    if st["importance_note"]:
        out.append(Fields([f"note: {st['importance_note']}"]))
    return out


IMPORTANCE_LEGEND = (
    "fANOVA: the parameter's share of the score's variance; PED-ANOVA: how differently it is set in the best "
    "10% of trials than in all of them (what optuna-dashboard draws). They answer different questions; on few "
    "trials they often disagree."
)


def trials_table(st: dict[str, Any]):
    """The finished trials, best first: state, score, its margin over the mean frame, epochs, values."""
    from cvae.terminal import Col, table

    reverse = st["direction"] == "maximize"
    ordered = sorted(
        st["trials"], key=lambda t: (t["value"] is None, -(t["value"] or 0) if reverse else t["value"] or 0)
    )
    columns = [
        Col("trial", numeric=True),
        Col("state"),
        Col(metric_header(st["metric"]), numeric=True),
        Col("vs the mean frame, in dB", numeric=True, short="vs mf"),
        Col("epochs", numeric=True, short="ep"),
        Col("parameters", short="params"),
    ]
    rows = [
        [
            t["number"],
            t["state"],
            "-" if t["value"] is None else f"{t['value']:.2f}",
            "-" if t["vs_mean_frame"] is None else f"{t['vs_mean_frame']:+.2f}",
            t["epochs_done"] or "-",
            (f"[{t['label']}]\n" if t["label"] else "") + params_text(t["params"]),
        ]
        for t in ordered
    ]
    where = f" ({st['metric']} {source_of(st['metric'])})" if source_of(st["metric"]) else ""
    return table(f"trials of {st['study']}, best first{where}", columns, rows)
