import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pixelweight import plotting  # noqa: E402


def test_label_colors_background_black_and_distinct():
    colors = plotting.label_colors(11)
    assert colors.shape == (11, 3)
    assert np.all(colors[0] == 0)
    assert len({tuple(c) for c in colors}) == 11


def test_colorize_maps_classes_and_ignore():
    labels = np.array([[0, 1], [2, 255]])
    rgb = plotting.colorize(labels, 3, ignore_index=255)
    colors = plotting.label_colors(3)
    assert np.allclose(rgb[0, 1], colors[1]) and np.allclose(rgb[1, 0], colors[2])
    assert np.allclose(rgb[1, 1], 1.0)
    with pytest.raises(ValueError, match="lie in"):
        plotting.colorize(np.array([[5]]), 3)
    with pytest.raises(ValueError, match="2-D integer"):
        plotting.colorize(np.zeros((2, 2), dtype=float), 3)
    with pytest.raises(ValueError, match="num_classes"):
        plotting.label_colors(0)


def test_figures_have_labels():
    plotting.set_style()
    ax = plotting.plot_class_frequencies({"a": [0.5, 0.3, 0.2]}, ["bg", "x", "y"])
    assert ax.get_xlabel() == "class" and "pixels" in ax.get_ylabel()
    with pytest.raises(ValueError, match="expected 3"):
        plotting.plot_class_frequencies({"a": [1.0]}, ["bg", "x", "y"])
    hist = {"ce": [[{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}]] * 2}
    ax = plotting.plot_history(hist)
    assert ax.get_xlabel() == "optimiser step"
    with pytest.raises(ValueError, match="no history entry"):
        plotting.plot_history(hist, key="miou")
    # one line per seed: two runs of two seeds are four lines
    two = {"a": [[{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}], [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}]],
           "b": [[{"step": 1, "loss": 3.0}, {"step": 2, "loss": 0.1}], [{"step": 1, "loss": 0.2}, {"step": 2, "loss": 0.3}]]}
    _, ax = plt.subplots()
    plotting.plot_history(two, per_seed=True, ax=ax)
    assert sorted(tuple(line.get_ydata()) for line in ax.lines if len(line.get_ydata()) == 2) == [
        (0.2, 0.3), (1.0, 0.5), (2.0, 1.0), (3.0, 0.1)]
    _, ax = plt.subplots()
    plotting.plot_history(two, ax=ax)  # the mean of each run
    assert sorted(tuple(line.get_ydata()) for line in ax.lines if len(line.get_ydata()) == 2) == [
        (1.5, 0.75), (1.6, 0.2)]
    with pytest.raises(TypeError, match="per_seed must be a bool"):
        plotting.plot_history(two, per_seed="yes")
    with pytest.raises(ValueError, match="non-empty dict"):
        plotting.plot_history({})
    with pytest.raises(TypeError, match="key must be a str"):
        plotting.plot_history(two, key=3)
    fig = plotting.show_pairs([np.zeros((4, 4))], [np.zeros((4, 4), int)], 3)
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="as many targets"):
        plotting.show_pairs([np.zeros((4, 4))], [], 3)
    plt.close("all")


def test_class_legend_lists_every_class():
    fig, _ = plt.subplots()
    plotting.class_legend(fig, ["bg", "a", "b"])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["bg", "a", "b"]
    plt.close(fig)
