"""Frames are pure: the same seed and clock give the same text, at every size."""
import pytest

import fake_llm_training as flt
from conftest import CATALOG, assert_golden, frame_at, text_of


def test_80x24_frame_is_exactly_the_golden_text():
    assert_golden("frame_seed5_80x24.txt", text_of(frame_at(5, 80, 24, tau=30.0)))


SIZES = [(1, 1), (2, 1), (10, 2), (19, 3), (20, 3), (20, 5), (40, 10), (60, 15), (80, 24), (100, 30),
         (120, 40), (132, 43), (160, 50), (200, 60), (240, 80)]


@pytest.mark.parametrize("width,height", SIZES)
@pytest.mark.parametrize("seed", [5, 12])
def test_every_size_gives_exactly_height_lines_of_width_cells(width, height, seed):
    for options in ({}, {"help": True}, {"gpu_mode": "nodes"}, {"gpu_mode": "hidden", "chart": False},
                    {"view": "gpus"}, {"view": "chart"}, {"view": "log"}, {"paused": True, "speed": 4.0}):
        lines = frame_at(seed, width, height, **options)
        assert len(lines) == height, options
        for line in lines:
            assert len(line.text) == width, (options, line.text)
            assert all(0 <= start < width and start + n <= width for start, n, _ in line.spans), options
            assert all(ord(c) < 128 for c in line.text)


def test_regions_by_priority():
    at_80 = text_of(frame_at(5, 80, 24))
    assert "iteration" in at_80 and "CLUSTER" in at_80 and " step " in at_80
    tiny = text_of(frame_at(5, 20, 5))
    assert "%" in tiny.splitlines()[-2]                  # the footer survives
    too_small = text_of(frame_at(5, 12, 2))
    assert "too small" in too_small


def test_gpu_panel_rows_and_more_nodes_line():
    text = text_of(frame_at(5, 120, 40))
    rows = [l for l in text.splitlines() if l.startswith("   ") and "MiB" in l and "W" in l]
    assert len(rows) >= 8
    assert "more nodes" in text                            # 16 nodes do not fit in 40 lines


def test_unicode_glyphs_only_when_asked():
    lines = frame_at(5, 120, 40, glyphs=flt.GLYPHS_UNICODE)
    assert any("\u2588" in l.text for l in lines)
    assert all(ord(c) < 128 for l in frame_at(5, 120, 40) for c in l.text)


def test_paused_and_speed_are_shown():
    footer = text_of(frame_at(5, 100, 30, paused=True, speed=4.0)).splitlines()[-1]
    assert "PAUSED" in footer and "x4" in footer


@pytest.mark.parametrize("width", [40, 60])
def test_a_failed_gpus_bar_is_as_wide_as_its_neighbours(width):
    cfg = flt.make_run_config(CATALOG, 5, 1)
    working = flt.gpu_cell(0, flt.GpuReading(99, 40000, 70, 500, False), cfg, width, flt.GLYPHS_ASCII)
    failed = flt.gpu_cell(1, flt.GpuReading(0, 40000, 70, 90, True), cfg, width, flt.GLYPHS_ASCII)
    assert "ERR Xid 48" in failed and len(failed) == len(working) == width
    assert failed.index("]") == working.index("]")
