"""What every kernel-free plotly slider of the chapters (a figure's `layout.sliders`) must do, checked by property
rather than by its exact wording or indices, so that a reworded title or a reordered grid breaks no test and a
broken slider fails one:

- the grid: one step per value, in order, each labelled with its value;
- moving the slider changes the data: no two steps show the same traces (or layout: shapes, annotations, ranges);
- and the title: no two steps have the same title, and each names the parameter and the step's value;
- a step sets `title.text`, never `title` (plotly.js 4 would erase the styled title);
- the figure opens on the active step: its title and its visible traces.
"""
import json


def _label_value(label):
    try:
        return float(label)
    except (TypeError, ValueError):
        return label


def _same_value(label, value):
    a, b = _label_value(label), _label_value(value)
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-9 * max(1.0, abs(b))
    return str(label) == str(value)


def _parts(step):
    "A step's (data changes, layout changes), whatever its method: `update`, `restyle` or `relayout`."
    args = list(step.args) + [{}, {}]
    if step.method == "relayout":
        return {}, dict(args[0] or {})
    if step.method == "restyle":
        return dict(args[0] or {}), {}
    return dict(args[0] or {}), dict(args[1] or {})


def check_slider(fig, values, parameter, *, value_in_title=True):
    """Check `fig`'s one slider against the grid `values` of `parameter` (the name its titles use, e.g. "bptt");
    `value_in_title=False` where a step's title states a consequence (a count) rather than the value itself.
    Returns the steps' titles, for checks of their numbers."""
    (slider,) = fig.layout.sliders
    steps = slider.steps
    assert len(steps) == len(values), f"{len(steps)} steps for a grid of {len(values)} values"
    assert all(_same_value(s.label, v) for s, v in zip(steps, values)), \
        f"labels {[s.label for s in steps]} are not the grid {list(values)}"
    datas, layouts = zip(*(_parts(s) for s in steps))
    assert not any("title" in lay for lay in layouts), "a step sets `title`: plotly.js 4 would erase the styled title"
    views = {json.dumps([d, {k: v for k, v in lay.items() if k != "title.text"}], sort_keys=True, default=str)
             for d, lay in zip(datas, layouts)}
    assert len(views) == len(steps), "two steps of the slider show the same traces: moving it changes nothing"
    titles = [lay.get("title.text") for lay in layouts]
    assert all(titles) and len(set(titles)) == len(steps), f"the slider does not retitle every step: {titles}"
    for t, s in zip(titles, steps):
        assert parameter in t, f"the title {t!r} does not name {parameter!r}"
        assert not value_in_title or str(s.label) in t, f"the title {t!r} does not say {parameter} = {s.label}"
    a = slider.active
    assert fig.layout.title.text == titles[a], "the figure does not open on its active step's title"
    visible = datas[a].get("visible")
    if visible is not None:
        assert [tr.visible is not False for tr in fig.data] == [bool(v) for v in visible], \
            "the figure does not open on its active step's traces"
    return titles
