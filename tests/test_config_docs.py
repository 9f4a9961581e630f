"""docs/configs.md is generated from the config dataclasses and cannot drift from them."""

import dataclasses
from pathlib import Path

from tdjax.train import config_docs, core

DOCS = Path(__file__).parent.parent / "docs" / "configs.md"


def test_page_is_up_to_date():
    assert DOCS.read_text() == config_docs.render(), (
        "docs/configs.md is stale: regenerate it with `python -m tdjax.train.config_docs > docs/configs.md`")


def test_every_field_of_every_config_has_a_unit_and_a_meaning():
    assert len(core._FAMILIES) >= 2
    for cls in core._FAMILIES:
        table, missing = config_docs.config_table(cls)
        assert not missing, f"{cls.__name__}: give these fields a trailing comment and a UNITS entry: {missing}"
        for f in dataclasses.fields(cls):
            assert f"| `{f.name}` |" in table


def test_field_comments_reads_trailing_comments_only():
    @dataclasses.dataclass(frozen=True)
    class Cfg:
        # a group heading, not a field's comment
        a: int = 1  # first
        b: str = "x#y"  # second, after a '#' inside a string
        c: float = 2.0

    assert config_docs.field_comments(Cfg) == {"a": "first", "b": "second, after a '#' inside a string", "c": ""}
    _, missing = config_docs.config_table(Cfg)
    assert missing == ["a", "b", "c"]  # no UNITS entries for these names (and c has no comment)
