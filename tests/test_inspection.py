from html.parser import HTMLParser

import numpy as np
import pytest

from charlstm.checkpoint import load_checkpoint, model_from_checkpoint
from charlstm.inspection import OPEN, colour, inspect_text, text_features, to_html

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
    page.feed(to_html(report, "inspect <test>"))
    assert "script" not in page.tags and "link" not in page.tags and page.external == []
    assert page.spans == len(report.units) * len(report.pieces)  # every character of every unit
    assert page.tables == ["gates", "predictions"]
