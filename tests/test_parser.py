"""Recipe parsing: YAML defaults, command-line overrides, unknown keys, type errors."""

from dataclasses import dataclass, field

import pytest

from hf_vtrain.parser import RecipeError, parse_args, peek_key, split_argv


@dataclass
class A:
    learning_rate: float = 1e-3
    num_layers: int = 2
    name: str | None = None
    flag: bool = False
    groups: list[dict] = field(default_factory=list)


@dataclass
class B:
    window_size: int = 768
    ratios: list[float] = field(default_factory=lambda: [0.5])


def write(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return str(path)


def test_yaml_defaults_and_cli_override(tmp_path):
    path = write(tmp_path, "task: tad\nlearning_rate: 1e-4\nnum_layers: 3\nwindow_size: 64\n")
    a, b, keys = parse_args([path, "--num_layers", "5", "--flag", "--ratios=[1, 2.5]"], (A, B))
    # YAML 1.1 reads 1e-4 as a string: it must still come out as a float
    assert a.learning_rate == pytest.approx(1e-4) and isinstance(a.learning_rate, float)
    assert a.num_layers == 5 and a.flag is True
    assert b.window_size == 64 and b.ratios == [1.0, 2.5]
    assert keys["task"] == "tad"


def test_config_flag_equals_positional(tmp_path):
    path = write(tmp_path, "task: tad\nnum_layers: 4\n")
    assert parse_args(["--config", path], (A, B))[0] == parse_args([path], (A, B))[0]
    with pytest.raises(RecipeError, match="not both"):
        split_argv([path, "--config", path])


def test_unknown_key_names_closest(tmp_path):
    path = write(tmp_path, "task: tad\nlearning_rat: 0.1\n")
    with pytest.raises(RecipeError, match=r"r\.yaml: unknown key 'learning_rat'; did you mean 'learning_rate'"):
        parse_args([path], (A, B))
    with pytest.raises(RecipeError, match=r"command line: unknown key 'windowsize'; did you mean 'window_size'"):
        parse_args(["--windowsize", "3"], (A, B))


@pytest.mark.parametrize("text, message", [
    ("num_layers: two\n", "key 'num_layers' expects an integer, got 'two'"),
    ("learning_rate: fast\n", "key 'learning_rate' expects a number"),
    ("flag: maybe\n", "key 'flag' expects true/false"),
    ("- a\n- b\n", "a recipe is a flat mapping"),
    ("a: [1, 2\n", "not valid YAML"),
    ("num_layers:\n  a: 3\n", "key 'num_layers' holds a nested mapping"),
    ("section:\n  num_layers: 3\n", "unknown key 'section'"),
    ("num_layers: 2.5\n", "expects an integer"),
])
def test_malformed_recipes(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(RecipeError) as err:
        parse_args([path], (A, B))
    assert message in str(err.value) and "r.yaml" in str(err.value)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        parse_args([str(tmp_path / "nope.yaml")], (A, B))


def test_peek_key(tmp_path):
    path = write(tmp_path, "task: tad\n")
    assert peek_key([path], "task") == "tad"
    assert peek_key([path, "--task", "vad"], "task") == "vad"


def test_duplicate_field_names_refused():
    @dataclass
    class C:
        window_size: int = 1

    with pytest.raises(TypeError, match="window_size"):
        parse_args([], (B, C))


def test_yaml_booleans_in_string_fields(tmp_path):
    from hf_vtrain.trainers.arguments import VTrainingArguments

    # on the command line the text is kept for string-typed fields: `--eval_strategy no` is "no", not False
    (args, _) = parse_args(["--output_dir", "o", "--eval_strategy", "no", "--save_strategy", "epoch"],
                           (VTrainingArguments,))
    assert args.eval_strategy == "no" and args.save_strategy == "epoch"
    # in a file, unquoted `no` is a YAML boolean: a clear error that says to quote it
    path = write(tmp_path, "output_dir: o\neval_strategy: no\n")
    with pytest.raises(RecipeError, match="quote the value"):
        parse_args([path], (VTrainingArguments,))
