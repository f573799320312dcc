"""The reusable widgets against independent references (numpy, the config dataclasses)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QComboBox, QLineEdit

from lmstudio import config as C
from lmstudio.ui.widgets.config_form import ConfigForm
from lmstudio.ui.widgets.heatmap import Heatmap
from lmstudio.ui.widgets.plots import MetricPlot
from lmstudio.ui.widgets.series import Series
from lmstudio.ui.widgets.token_preview import TOKEN_COLOURS, TokenPreview
from lmstudio.ui.widgets.vocab_table import VocabBrowser


def test_series_matches_numpy_and_grows_geometrically():
    rng = np.random.default_rng(0)
    xs, ys = np.arange(10_000, dtype=float), rng.normal(size=10_000)
    s = Series(capacity=4)
    capacities = set()
    for x, y in zip(xs[:5000], ys[:5000], strict=True):
        s.append(x, y)
        capacities.add(s.capacity)
    s.extend(xs[5000:], ys[5000:])
    np.testing.assert_array_equal(s.x, xs)
    np.testing.assert_array_equal(s.y, ys)
    assert len(capacities) <= 12  # doubling: log2(5000/4) + 1 reallocations, not one per append
    assert s.last() == (xs[-1], ys[-1])
    s.clear()
    assert len(s) == 0 and s.x.size == 0


def test_series_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        Series().extend([1, 2], [1])


@pytest.mark.parametrize("section", ["model", "train", "tokenizer", "sample"])
def test_config_form_has_one_editor_per_field_of_the_right_kind(qtbot, section):
    form = ConfigForm(section)
    qtbot.addWidget(form)
    specs = dataclasses.fields(C.SECTIONS[section])
    assert form.field_names() == [f.name for f in specs]
    for spec in specs:
        editor = form.editor(spec.name)
        if C.field_type(spec) is bool:
            assert isinstance(editor, QCheckBox)
        elif spec.metadata.get("choices"):
            assert isinstance(editor, QComboBox)
            assert [editor.itemText(i) for i in range(editor.count())] == list(spec.metadata["choices"])
        else:
            assert isinstance(editor, QLineEdit)
    # the defaults round-trip through the widgets unchanged
    obj, errors = form.apply_to(C.SECTIONS[section]())
    assert errors == {} and obj == C.SECTIONS[section]()


def test_config_form_reports_unparsable_and_out_of_range_values(qtbot):
    form = ConfigForm("train")
    qtbot.addWidget(form)
    form.show()
    lr = form.editor("lr")
    lr.clear()
    qtbot.keyClicks(lr, "abc")
    _, errors = form.apply_to(C.TrainConfig())
    assert errors == {"train.lr": "expected a number, got 'abc'"}
    steps = form.editor("batch_size")
    steps.clear()
    qtbot.keyClicks(steps, "0")
    obj, _ = form.apply_to(C.TrainConfig())
    reasons = C.section_errors("train", obj)
    form.show_errors({**reasons, **errors})
    assert form.error_text("lr") == "expected a number, got 'abc'"
    assert form.error_text("batch_size") == reasons["train.batch_size"] == "must be at least 1"
    assert form.error_text("max_steps") == ""
    form.show_errors({})
    assert form.error_text("lr") == ""


def test_config_form_hides_fields_that_do_not_apply_to_the_architecture(qtbot):
    form = ConfigForm("model")
    qtbot.addWidget(form)
    form.show()
    form.set_arch("lstm")
    assert form.editor("n_head").isHidden() or not form.editor("n_head").isVisible()
    assert form.editor("hidden_size").isVisible()
    form.set_arch("transformer")
    assert form.editor("n_head").isVisible()
    assert not form.editor("hidden_size").isVisible()


def test_config_form_edits_emit_changed(qtbot):
    form = ConfigForm("model")
    qtbot.addWidget(form)
    with qtbot.waitSignal(form.changed, timeout=1000):
        qtbot.keyClicks(form.editor("n_layer"), "3")
    with qtbot.waitSignal(form.changed, timeout=1000):
        form.editor("arch").setCurrentText("gru")
    obj, errors = form.apply_to(C.ModelConfig())
    assert errors == {} and obj.arch == "gru" and obj.n_layer == int(C.ModelConfig().n_layer * 10 + 3)


def test_vocab_browser_sorts_numbers_numerically_and_searches(qtbot):
    browser = VocabBrowser()
    qtbot.addWidget(browser)
    tokens = np.array(["a", "b", "ab", " ", "\n", "Ba", "c"], dtype=object)
    ids = np.arange(len(tokens))
    freq = np.array([5, 100, 9, 1000, 20, 3, 0])
    browser.set_vocab(tokens, ids, freq)
    browser.view.sortByColumn(2, Qt.SortOrder.DescendingOrder)
    rows = browser.visible_rows()
    assert [r[2] for r in rows] == sorted(freq.tolist(), reverse=True)  # 1000 before 100 before 20 ...
    browser.view.sortByColumn(1, Qt.SortOrder.AscendingOrder)
    assert [r[1] for r in browser.visible_rows()] == ids.tolist()
    qtbot.keyClicks(browser.search, "a")
    expected = sorted(i for i, t in enumerate(tokens) if "a" in t.lower())
    assert [r[1] for r in browser.visible_rows()] == expected
    browser.search.clear()
    assert len(browser.visible_rows()) == len(tokens)
    # whitespace tokens are shown with visible marks, not as empty cells
    shown = {browser.model.data(browser.model.index(r, 0)) for r in range(len(tokens))}
    assert "␣" in shown and "↵" in shown


def test_token_preview_colours_alternate_per_token(qtbot):
    def split(text):  # a toy tokenizer: pairs of characters
        return [(text[i : i + 2], i // 2) for i in range(0, len(text), 2)]

    preview = TokenPreview(split)
    qtbot.addWidget(preview)
    with qtbot.waitSignal(preview.updated, timeout=2000) as blocker:
        preview.input.setPlainText("abcdefg")
    assert blocker.args == [4]
    assert "".join(p for p, _ in preview.pieces()) == "abcdefg"
    doc = preview.output.document()
    colours = []
    block = doc.begin()
    it = block.begin()
    while not it.atEnd():
        frag = it.fragment()
        colours.append((frag.text(), frag.charFormat().background().color().name()))
        it += 1
    assert [t for t, _ in colours] == ["ab", "cd", "ef", "g"]
    assert [c for _, c in colours] == [TOKEN_COLOURS[i % len(TOKEN_COLOURS)] for i in range(4)]
    assert "4 tokens" in preview.summary.text()


def test_metric_plot_draws_on_refresh_and_reads_out_nearest_point(qtbot):
    plot = MetricPlot("Loss")
    qtbot.addWidget(plot)
    plot.add_curve("loss", "train")
    for step in range(0, 100, 10):
        plot.append("loss", step, 10.0 - step / 10)
    assert plot.point_count("loss") == 0  # nothing drawn until the timer's refresh
    assert plot.refresh() is True
    assert plot.point_count("loss") == 10
    assert plot.refresh() is False  # nothing changed, nothing redrawn
    assert plot.readout_at(31) == "train: 7 @ 30"
    assert plot.readout_at(36) == "train: 6 @ 40"
    plot.set_log_y(True)
    plot.clear_data()
    assert plot.point_count("loss") == 0


def test_metric_plot_keeps_100k_points_downsampled(qtbot):
    plot = MetricPlot("Loss")
    qtbot.addWidget(plot)
    plot.add_curve("loss", "train")
    xs = np.arange(100_000, dtype=float)
    plot.set_series("loss", xs, np.sin(xs / 1000))
    plot.refresh()
    plot.resize(400, 300)
    plot.show()
    qtbot.waitExposed(plot)
    curve = plot.getPlotItem().listDataItems()[0]
    assert curve.getOriginalDataset()[0].size == 100_000
    plot.autoscale()
    # what is drawn, after downsampling: about a few points per pixel of width, not 100k
    qtbot.waitUntil(lambda: curve.getData()[0] is not None and curve.getData()[0].size < 20_000, timeout=3000)


def test_heatmap_updates_its_items_in_place_and_rebuilds_only_for_a_new_shape(qtbot):
    hm = Heatmap()
    qtbot.addWidget(hm)
    rng = np.random.default_rng(0)
    labels = [f"t{i}" for i in range(5)]
    first = [rng.random((5, 5)) for _ in range(4)]
    hm.set_grid(first, labels, labels, titles=[f"head {h + 1}" for h in range(4)], levels=(0.0, 1.0))
    images, plots, bar = list(hm.images), list(hm.plots), hm.colorbar
    assert hm.builds == 1 and len(images) == 4
    second = [rng.random((5, 5)) * 2 for _ in range(4)]
    hm.set_grid(second, labels, labels, titles=["a", "b", "c", "d"], levels=(0.0, 2.0), cmap="CET-D1")
    # the same items, showing the new numbers on the new scale, titles and colour map
    assert hm.builds == 1 and hm.images == images and hm.plots == plots and hm.colorbar is bar
    for image, m in zip(hm.images, second, strict=True):
        np.testing.assert_array_equal(image.image, m.astype(np.float32))
        assert tuple(image.getLevels()) == (0.0, 2.0)
    assert plots[2].titleLabel.text == "c"
    assert hm.images[0].getColorMap().name == "CET-D1"
    # other labels: new ticks on the same items
    hm.set_grid(second, list("abcde"), list("abcde"), titles=["a", "b", "c", "d"], levels=(0.0, 2.0))
    assert [lab for _, lab in plots[0].getAxis("left")._tickLevels[0]] == list("abcde")
    assert hm.builds == 1
    # another shape, or another number of matrices: built anew
    hm.set_grid([rng.random((6, 6))], labels + ["t5"], labels + ["t5"])
    assert hm.builds == 2 and len(hm.images) == 1 and hm.images[0] not in images
    hm.clear()
    hm.set_grid([rng.random((6, 6))], labels + ["t5"], labels + ["t5"])
    assert hm.builds == 3


def test_distribution_chart_updates_its_two_bar_items_in_place(qtbot):
    from lmstudio.ui.widgets.distribution_chart import DistributionChart

    chart = DistributionChart()
    qtbot.addWidget(chart)
    items = (chart.model_bars, chart.sampler_bars)
    chart.set_candidates(["a", "b", "c"], [0.5, 0.3, 0.2], [0.7, 0.3, 0.0], chosen=1)
    chart.set_candidates(["d", "e"], [0.6, 0.4], [0.6, 0.4])
    assert (chart.model_bars, chart.sampler_bars) == items  # the same items, new data
    assert [i for i in chart.getPlotItem().items if i in items] == list(items)  # added once each
    np.testing.assert_allclose(chart.model_bars.opts["height"], [0.6, 0.4])
    np.testing.assert_allclose(chart.sampler_bars.opts["x"], np.arange(2) + 0.19)
    chart.clear_chart()
    assert chart.labels == [] and len(chart.model_bars.opts["height"]) == 0
    chart.set_candidates(["f"], [1.0], [1.0], chosen=0)
    assert chart.model_bars is items[0] and list(chart.model_bars.opts["height"]) == [1.0]
