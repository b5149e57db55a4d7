"""How trials and their parameters read in a terminal: one line per trial, ``key=value`` words, a
metric's column header with its unit. Shared by the live view, ``cvae sweep status`` and confirm's table."""

from __future__ import annotations

from typing import Any

from cvae import history
from cvae.terminal import fmt


def trial_line(t, metric: str | None = None) -> str:
    """One line per finished trial: its values, its score with its unit (or why it has none), its time."""
    params = ", ".join(f"{k}={fmt(v)}" for k, v in t.params.items())
    epochs = t.user_attrs.get("epochs_done")
    ep = f", {epochs} epochs" if epochs is not None else ""
    state = t.state.name
    if state == "COMPLETE":
        margin = t.user_attrs.get("vs_mean_frame")
        what = (f"{metric} {history.with_unit(metric, t.value)}" if metric else fmt(t.value)) + ep
        if margin is not None:
            what += f", {margin:+.2f} dB vs the mean frame" + ("" if margin > 0 else ": does not animate the dancer")
    elif state == "PRUNED":
        what = f"pruned{ep}"
    else:
        what = f"{state.lower()}: {t.user_attrs.get('fail_reason', 'no reason recorded')}"
    dur = f" ({t.duration.total_seconds():.0f} s)" if t.duration is not None else ""
    label = f" [{t.user_attrs['label']}]" if "label" in t.user_attrs else ""
    return f"trial {t.number}{label}: {params} -> {what}{dur}"


def metric_header(metric: str) -> str:
    """A table's header for a metric: its unit under its name (``val/psnr`` over ``(dB)``)."""
    return f"{metric}\n({history.unit(metric)})" if history.unit(metric) else metric


def param_words(params: dict[str, Any]) -> list[str]:
    """``key=value`` each (4 significant digits): words a line or a table cell never splits."""
    return [f"{k}={fmt(v)}" for k, v in params.items()]


def params_text(params: dict[str, Any]) -> str:
    """A table's parameters column: ``key=value`` words that wrap as the column's width allows."""
    return " ".join(param_words(params))
