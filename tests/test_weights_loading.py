"""Strict loading into a module: every mismatch named, query tables, class-head re-init."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from weights_helpers import HIDDEN, assert_one_line, tiny_detector

from rfdetr.checkpoints import CheckpointError, load_weights, save_checkpoint
from rfdetr.weights import load_state_dict_strict


def test_missing_key_is_named() -> None:
    sd = tiny_detector().state_dict()
    del sd["transformer.decoder.layers.0.cross_attn.sampling_offsets.weight"]
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(tiny_detector(), sd, source="ck.pth")
    assert_one_line(err, "ck.pth", "missing key", "sampling_offsets.weight", "[16, 8]")


def test_unexpected_key_is_named() -> None:
    sd = tiny_detector().state_dict()
    sd["segmentation_head.bias"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(tiny_detector(), sd, source="ck.pth")
    assert_one_line(err, "ck.pth", "unexpected key 'segmentation_head.bias'")


def test_missing_buffer_is_named() -> None:
    sd = tiny_detector().state_dict()
    del sd["backbone.running_stat"]
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(tiny_detector(), sd, source="ck.pth")
    assert_one_line(err, "backbone.running_stat")


def test_shape_mismatch_names_key_and_both_shapes() -> None:
    sd = tiny_detector().state_dict()
    key = "backbone.0.encoder.encoder.embeddings.position_embeddings"
    sd[key] = torch.zeros(1, 10, HIDDEN)
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(tiny_detector(), sd, source="ck.pth")
    assert_one_line(err, key, "[1, 10, 8]", "[1, 5, 8]", "resolution")


def test_keypoint_buffer_dropped_only_when_empty() -> None:
    model, sd = tiny_detector(), tiny_detector().state_dict()
    load_state_dict_strict(
        model, {**sd, "_kp_active_mask": torch.zeros(0, 0, dtype=torch.bool)}, source="a"
    )
    real_mask = torch.ones(1, 17, dtype=torch.bool)
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(model, {**sd, "_kp_active_mask": real_mask}, source="a")
    assert_one_line(err, "unexpected key '_kp_active_mask'")


def test_load_does_not_modify_input_and_copies_values() -> None:
    source_model = tiny_detector()
    sd = source_model.state_dict()
    before = {k: v.clone() for k, v in sd.items()}
    target = tiny_detector(num_queries=2)
    load_state_dict_strict(target, sd, source="ck", num_queries_total=4)
    assert all(torch.equal(sd[k], before[k]) for k in sd) and sd.keys() == before.keys()


def test_query_tables_cut_per_group(caplog: pytest.LogCaptureFixture) -> None:
    source = tiny_detector(num_queries=6, groups=2)
    sd = source.state_dict()
    target = tiny_detector(num_queries=4, groups=2)
    with caplog.at_level(logging.INFO, logger="rfdetr.weights"):
        load_state_dict_strict(
            target, sd, source="ck", num_queries_total=8, group_detr=2, checkpoint_group_detr=2
        )
    got = target.state_dict()["query_feat.weight"]
    assert torch.equal(got[:4], sd["query_feat.weight"][:4])
    assert torch.equal(got[4:], sd["query_feat.weight"][6:10])  # group 1 starts at row 6
    assert "cut from 12 to 8 rows" in caplog.text


def test_more_queries_per_group_than_trained_is_an_error() -> None:
    target = tiny_detector(num_queries=3, groups=2)  # 6 rows, but 3 > 2 queries per group
    sd = target.state_dict()
    sd["refpoint_embed.weight"] = torch.zeros(8, 4)  # 4 groups of 2 queries
    sd["query_feat.weight"] = torch.zeros(8, HIDDEN)
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(
            target, sd, source="ck", num_queries_total=6, group_detr=2, checkpoint_group_detr=4
        )
    assert_one_line(err, "shape mismatch", "[8, 4]", "[6, 4]")


def test_query_tables_flat_prefix_without_group_info() -> None:
    sd = tiny_detector(num_queries=6, groups=2).state_dict()
    target = tiny_detector(num_queries=3, groups=2)
    load_state_dict_strict(target, sd, source="ck", num_queries_total=6)
    assert torch.equal(
        target.state_dict()["refpoint_embed.weight"], sd["refpoint_embed.weight"][:6]
    )


def test_query_rows_differ_without_opt_in_is_an_error() -> None:
    sd = tiny_detector(num_queries=6).state_dict()
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(tiny_detector(num_queries=4), sd, source="ck")
    assert_one_line(err, "[12, 4]", "[8, 4]", "num_queries_total")


def test_fewer_query_rows_than_model_is_an_error() -> None:
    sd = tiny_detector(num_queries=2).state_dict()
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(tiny_detector(num_queries=4), sd, source="ck", num_queries_total=8)
    assert_one_line(err, "shape mismatch", "[4, 4]", "[8, 4]")


def test_head_reinit_tiles_rows_for_more_classes(caplog: pytest.LogCaptureFixture) -> None:
    sd = tiny_detector(num_classes=2).state_dict()
    target = tiny_detector(num_classes=5)
    with caplog.at_level(logging.INFO, logger="rfdetr.weights"):
        load_state_dict_strict(target, sd, source="ck", reinit_head_for=5)
    got = target.state_dict()
    old = sd["class_embed.weight"]
    assert torch.equal(got["class_embed.weight"], torch.cat([old, old])[:6])
    assert torch.equal(
        got["transformer.enc_out_class_embed.1.bias"][3:],
        sd["transformer.enc_out_class_embed.1.bias"],
    )
    assert "resized from 2 to 5 classes" in caplog.text


def test_head_reinit_crops_rows_for_fewer_classes() -> None:
    sd = tiny_detector(num_classes=90).state_dict()
    target = tiny_detector(num_classes=1)
    load_state_dict_strict(target, sd, source="ck", reinit_head_for=1)
    assert torch.equal(target.state_dict()["class_embed.bias"], sd["class_embed.bias"][:2])


def test_class_count_mismatch_without_opt_in_is_an_error() -> None:
    sd = tiny_detector(num_classes=90).state_dict()
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(tiny_detector(num_classes=3), sd, source="ck")
    assert_one_line(err, "enc_out_class_embed.0.weight", "[91, 8]", "[4, 8]", "reinit_head_for")


def test_load_weights_resizes_head_and_drops_stale_names(tmp_path: Path) -> None:
    path = save_checkpoint(
        tmp_path / "c.pth", tiny_detector(num_classes=90).state_dict(), config={}, class_names=None
    )
    loaded = load_weights(tiny_detector(num_classes=3), path, num_classes=3)
    assert (loaded.num_classes, loaded.class_names, loaded.label_to_logit) == (3, None, None)


def test_meta_model_loads_with_assign() -> None:
    sd = tiny_detector().state_dict()
    with torch.device("meta"):
        target = tiny_detector()
    load_state_dict_strict(target, sd, source="ck", assign=True)
    assert torch.equal(target.state_dict()["class_embed.weight"], sd["class_embed.weight"])
