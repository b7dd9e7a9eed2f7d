"""Training curves: every line has a legend entry (the eval loss on its right axis too), identical learning-rate
lines are drawn once and named together, and no legend sits on the plotted lines."""

import matplotlib.pyplot as plt

from hf_vtrain.plotting.curves import plot_training_curves, training_curves_figure

HISTORY = [
    {"step": 10, "epoch": 1.0, "loss": 2.0, "cls_loss": 1.5, "lr/adapters": 1e-3, "lr/detector": 1e-3, "lr/head": 5e-4},
    {"step": 20, "epoch": 2.0, "loss": 1.0, "cls_loss": 0.7, "lr/adapters": 5e-4, "lr/detector": 5e-4, "lr/head": 2e-4},
    {"step": 20, "epoch": 2.0, "eval_loss": 1.2, "eval_average_mAP": 40.0, "eval_runtime": 3.0},
    {"step": 40, "epoch": 4.0, "eval_loss": 0.9, "eval_average_mAP": 55.0, "eval_runtime": 3.0},
]


def _legend(ax):
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def test_every_line_is_in_a_legend_below_its_panel(tmp_path):
    fig = training_curves_figure(HISTORY)
    loss_ax, lr_ax, eval_ax = fig.axes[:3]
    assert _legend(loss_ax) == ["cls_loss", "loss"]
    # adapters and detector share every point: one line, both names; head is its own line
    assert sorted(_legend(lr_ax)) == ["adapters = detector", "head"]
    assert len(lr_ax.get_lines()) == 2
    assert _legend(eval_ax) == ["average_mAP", "eval loss (right axis)"]
    fig.canvas.draw()
    for ax in (loss_ax, lr_ax, eval_ax):
        legend_box = ax.get_legend().get_window_extent()
        assert legend_box.y1 <= ax.get_window_extent().y0  # entirely below the plotting area
    plt.close(fig)
    path = plot_training_curves(HISTORY, str(tmp_path / "curves.png"))
    assert (tmp_path / "curves.png").stat().st_size > 10_000 and path.endswith("curves.png")
