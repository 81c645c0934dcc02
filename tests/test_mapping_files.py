"""The hand-written JSON/YAML files (dataset descriptions, training configs) are read by one rule."""

from __future__ import annotations

import sys

import pytest

from deeplab_resnet.errors import DeepLabError
from deeplab_resnet.mapping_files import read_mapping


def test_json_and_yaml_give_the_same_mapping(tmp_path) -> None:
    pytest.importorskip("yaml")
    (tmp_path / "a.json").write_text('{"class_names": ["x", "y"], "ignore_label": 7}')
    (tmp_path / "a.YML").write_text("class_names: [x, y]\nignore_label: 7\n")
    want = {"class_names": ["x", "y"], "ignore_label": 7}
    assert read_mapping(tmp_path / "a.json", "thing", "keys") == want
    assert read_mapping(tmp_path / "a.YML", "thing", "keys") == want


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("bad.json", '{"a": 1,', r"bad.json: not a valid dataset description \(JSONDecodeError"),
        ("bad.yaml", "a: [1, 2\n", r"bad.yaml: not a valid dataset description \(\w+Error"),
        ("list.json", "[1, 2]", r"list.json: a dataset description must be a mapping of names to values"),
        ("list.yaml", "- 1\n- 2\n", r"list.yaml: a dataset description must be a mapping of names to values"),
        ("latin1.json", b'{"a": "\xe9"}', r"latin1.json: not a valid dataset description \(UnicodeDecodeError"),
    ],
)
def test_a_bad_file_is_one_line_naming_it(tmp_path, name, text, message) -> None:
    pytest.importorskip("yaml")
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DeepLabError, match=message) as caught:
        read_mapping(path, "dataset description", "names to values")
    assert "\n" not in str(caught.value)


def test_yaml_without_pyyaml_says_what_to_install(tmp_path, monkeypatch) -> None:
    (tmp_path / "c.yaml").write_text("a: 1\n")
    (tmp_path / "c.json").write_text('{"a": 1}')
    monkeypatch.setitem(sys.modules, "yaml", None)  # 'import yaml' now raises ImportError
    with pytest.raises(DeepLabError, match=r"c.yaml: reading YAML needs PyYAML \(pip install pyyaml\)"):
        read_mapping(tmp_path / "c.yaml", "config file", "flag names to values")
    assert read_mapping(tmp_path / "c.json", "config file", "flag names to values") == {"a": 1}  # JSON needs no YAML
