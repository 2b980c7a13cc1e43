"""Golden values for the one hash every cache key and resume check uses: a change here would orphan
every teacher, statistics file and run cached under the old keys."""
from pathlib import Path

from tinyset.utils.digest import folder_key, json_digest


def test_json_digest_golden_and_order_free():
    obj = {"b": 1, "a": [1, 2], "p": Path("/x")}  # a Path is hashed by its str
    assert json_digest(obj) == "e5a08479b834dfe7"
    assert json_digest({"p": "/x", "a": [1, 2], "b": 1}) == "e5a08479b834dfe7"  # key order never matters
    assert json_digest(obj, 12) == "e5a08479b834"
    assert json_digest({"a": [2, 1], "b": 1, "p": "/x"}) != "e5a08479b834dfe7"  # list order does


def test_folder_key_is_readable_and_safe():
    key = folder_key("imagefolder:/data/x y", "convnet3", {"a": 1})
    assert key == "imagefolder__data_x_y-convnet3-f9d86028c6e0"
    long = folder_key("n" * 100, "t", {})
    assert long.startswith("n" * 40 + "-t-") and len(long) == 40 + 3 + 12
