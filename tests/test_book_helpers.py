import pandas as pd
import pytest

from pixelweight.book import format_p, glue, table


def test_table_formats_floats_and_index():
    frame = pd.DataFrame({"a": [0.12345, 2.0], "b": ["x", "y"]}, index=pd.Index([1, 2], name="k"))
    assert table(frame).splitlines() == ["| a | b |", "|---|---|", "| 0.123 | x |", "| 2.000 | y |"]
    assert table(frame, floatfmt=".1f", index=True).splitlines()[2] == "| 1 | 0.1 | x |"


def test_format_p():
    assert format_p(0.0342) == "p = 0.034"
    assert format_p(0.0002) == "p < 0.001"
    with pytest.raises(ValueError, match="p-value"):
        format_p(1.5)


def test_glue_validates_names_and_returns_none():
    assert glue("ok_name", 1.0) is None
    with pytest.raises(ValueError, match="identifier"):
        glue("bad name", 1)
