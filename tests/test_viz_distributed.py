"""Chapter 08g's picture (awd_edu.viz.distributed): the columns of one batch shared out among the processes, with a
built-in slider over their number; the owners come from `shard_columns` itself."""
import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from awd_edu.distributed import Group, shard_columns
from awd_edu.viz.distributed import column_owners, sharding_figure


@pytest.mark.parametrize("B, W", [(12, 1), (12, 3), (12, 4), (8, 8), (20, 2)])
def test_owners_are_what_shard_columns_gives_each_rank(B, W):
    owners = column_owners(B, W)
    source = torch.arange(5 * B).view(5, B)
    for r in range(W):
        mine = [j for j, o in enumerate(owners) if o == r]
        assert torch.equal(shard_columns(source, Group(r, W)), source[:, mine])   # the same columns, in order
        assert mine == list(range(mine[0], mine[0] + B // W))                     # neighbours, equal shares


def test_slider_steps_change_the_data_and_the_title():
    sizes = (1, 2, 3, 6)
    fig = sharding_figure(batch_size=6, world_sizes=sizes, n_steps=4, active=2)
    assert type(fig) is go.Figure and len(fig.data) == len(sizes)
    (slider,) = fig.layout.sliders
    assert slider.active == 2 and [tr.visible for tr in fig.data] == [False, False, True, False]
    titles, zs = [], []
    for n, (w, step) in enumerate(zip(sizes, slider.steps)):
        assert step.method == "update" and "title" not in step.args[1]       # title.text: plotly.js 4 erases "title"
        assert [j for j, v in enumerate(step.args[0]["visible"]) if v] == [n]
        z = np.asarray(fig.data[n].z)
        assert z.shape == (4, 6) and (z == z[0]).all() and list(z[0]) == column_owners(6, w)   # one owner per column
        assert [a["text"] for a in step.args[1]["annotations"]] == [f"rank {r}" if 6 // w > 1 else str(r)
                                                                   for r in range(w)]
        assert all(a["yref"] == "paper" for a in step.args[1]["annotations"])   # above the rows: no axis stretched
        titles.append(step.args[1]["title.text"])
        zs.append(z.tobytes())
    assert len(set(titles)) == len(sizes) and len(set(zs)) == len(sizes)
    np.testing.assert_array_equal(np.asarray(fig.data[0].text), torch.arange(24).view(6, 4).T.numpy())  # batchify


def test_a_number_of_processes_that_does_not_divide_the_batch_is_refused():
    with pytest.raises(ValueError, match="cannot be split evenly"):
        sharding_figure(batch_size=10, world_sizes=(1, 3))
    with pytest.raises(ValueError, match="active"):
        sharding_figure(world_sizes=(1, 2), active=2)


def test_mask_draws_shared_give_one_process_masks_and_per_process_do_not():
    from awd_edu.viz.distributed import mask_draws
    now, before = mask_draws(shared=True, world_size=2), mask_draws(shared=False, world_size=2)
    assert all(torch.equal(r["weight"], now["one"]["weight"]) for r in now["ranks"])
    assert torch.equal(torch.cat([r["locked"] for r in now["ranks"]]), now["one"]["locked"])
    assert not torch.equal(before["ranks"][1]["weight"], before["one"]["weight"])
    assert not torch.equal(torch.cat([r["locked"] for r in before["ranks"]]), before["one"]["locked"])
    four = mask_draws(shared=True, world_size=4)
    assert [tuple(r["locked"].shape) for r in four["ranks"]] == [(2, 6)] * 4
    with pytest.raises(ValueError, match="cannot be split evenly"):
        mask_draws(shared=True, world_size=3)


def test_masks_figure_shows_both_ways_and_says_which_agree():
    from awd_edu.viz.distributed import masks_figure
    fig = masks_figure()
    assert len(fig.data) == 10 and all(set(np.ravel(tr.z)) <= {0, 1} for tr in fig.data)
    notes = [a.text for a in fig.layout.annotations if a.text.startswith("<b>")]
    assert notes == ["<b>before<br>a stream per process</b><br>U masks differ,<br>locked masks differ from<br>one process's",
                     "<b>now<br>one shared stream</b><br>U masks equal,<br>locked masks equal<br>one process's"]
    np.testing.assert_array_equal(np.asarray(fig.data[5].z), np.asarray(fig.data[6].z))   # one U mask everywhere
