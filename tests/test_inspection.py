from html.parser import HTMLParser

import numpy as np
import pytest

from charlstm.runs.checkpoint import load_checkpoint, model_from_checkpoint
from charlstm.display import colour, inspection_html
from charlstm.errors import ConfigError, DataError
from charlstm.analysis.inspection import OPEN, check_request, inspect_text, text_features

TEXT = 'He said "yes" (twice), and then\nhe left the room; "no" was never said (or written).\n' * 3


def test_text_features_follow_the_text():
    pieces = list('a "b" (c)\nxy')
    f = text_features(pieces)
    assert f["inside quotes"].tolist() == [0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert f["inside brackets"].tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    assert f["position in line"].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]
    assert f["start of a word"].tolist() == [1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1, 0]
    assert f["end of line"].tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]


def test_colour_scale():
    assert colour(0.0, 1.0) == (255, 255, 255)
    assert colour(1.0, 1.0) == (255, 0, 0) and colour(-2.0, 1.0) == (0, 0, 255)


@pytest.fixture(scope="module")
def report(tiny_run):
    model, tokenizer = model_from_checkpoint(load_checkpoint(tiny_run))
    return inspect_text(model, tokenizer, TEXT, at=10)


def test_inspection_finds_a_unit_per_feature_and_gate_statistics(report):
    assert {u.feature for u in report.units} == set(text_features(report.pieces)) - set(
        report.skipped_features
    )
    for unit in report.units:
        assert -1 <= unit.correlation <= 1 and len(unit.values) == len(report.pieces)
        # It really is the best: no unit of that layer correlates more strongly.
        feature = text_features(report.pieces)[unit.feature]
        layer = report.trace.layers[unit.layer][unit.quantity].numpy()
        rs = [
            abs(np.corrcoef(feature, layer[:, j])[0, 1])
            for j in range(layer.shape[1])
            if layer[:, j].std() > 0
        ]
        assert abs(unit.correlation) >= max(rs) - 1e-6
    gates = {(s.layer, s.gate) for s in report.gate_stats}
    assert gates == {(0, "forget"), (0, "input"), (0, "output")}
    forget = next(s for s in report.gate_stats if s.gate == "forget")
    values = report.trace.layers[0]["forget"].numpy()
    assert forget.open_fraction == pytest.approx(float((values > OPEN).mean()))


def test_predictions_are_the_most_likely_tokens(report):
    p = report.prediction
    probs = [q for _, q in p.top]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    assert p.position == 10 and p.context == TEXT[:11] and p.actual == TEXT[11]


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.spans, self.pre, self.tables, self.external = [], 0, 0, [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        self.spans += tag == "span"
        self.pre += tag == "pre"
        if tag == "table":
            self.tables.append(attrs.get("id"))
        for key in ("src", "href"):
            if key in attrs:
                self.external.append(attrs[key])


def test_html_page_is_self_contained_and_complete(report):
    page = _Page()
    page.feed(inspection_html(report, "inspect <test>"))
    assert "script" not in page.tags and "link" not in page.tags and page.external == []
    assert page.spans == len(report.units) * len(report.pieces)  # every character of every unit
    assert page.tables == ["gates", "predictions"]


def test_requests_the_model_cannot_answer_are_refused_together(tiny_run):
    model, tokenizer = model_from_checkpoint(load_checkpoint(tiny_run))
    with pytest.raises(ConfigError) as e:
        check_request(model.config, "update", 2, 33)
    assert str(e.value) == (
        "--show update: a lstm has cell, hidden, forget, input, output, candidate; "
        "--layer 2: the model has 1 layer; --unit 33: layers have units 1-32"
    )
    check_request(model.config, "forget", 1, 32)  # all within the model (both count from 1): no error
    with pytest.raises(DataError, match="too short to inspect: give at least 2 tokens"):
        inspect_text(model, tokenizer, "a")
    with pytest.raises(ConfigError, match=r"--at 9: the text has tokens 0-4"):
        inspect_text(model, tokenizer, "hello", at=9)
    assert inspect_text(model, tokenizer, "snow ☃ here").unknown_chars == ["☃"]



def test_png_draws_one_panel_per_unit(report, tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    from charlstm.display import inspection_png

    path = tmp_path / "units.png"
    assert inspection_png(report, str(path), chars=200, width=50)
    width, height = Image.open(path).size
    assert width == 50 * 0.1 * 130  # 0.1 inch per character at 130 dpi
    assert height > 100 * len(report.units)  # a panel (title and 5 lines of text) per unit
