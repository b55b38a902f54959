"""Data sets: shipped ones with readable names and labels, CSV files, and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.errors import UserError
from training.learning.data import SHIPPED, Dataset, load_dataset, model_name_for


def task_of(dataset: Dataset) -> str:
    return dataset.meta.infer_task(dataset.meta.resolve_target(dataset.target))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_sets_load_with_snake_case_features_and_a_task(name: str) -> None:
    dataset = load_dataset(name)
    assert dataset.target == "target"
    assert all(f == f.lower() and " " not in f for f in dataset.feature_names)
    expected = "regression" if name == "diabetes" else "classification"
    assert task_of(dataset) == expected
    assert len(dataset.sha256) == 64


def test_iris_labels_are_class_names_and_the_fingerprint_is_stable() -> None:
    iris = load_dataset("iris")
    assert set(iris.frame["target"]) == {"setosa", "versicolor", "virginica"}
    assert iris.sha256 == load_dataset("iris").sha256
    assert iris.feature_names[0] == "sepal_length_cm"


def test_csv_schema_types_categories_and_ranges(tmp_path: Path) -> None:
    path = tmp_path / "pets.csv"
    rows = ["weight,colour,indoor,kind"] + [
        f"{w},{c},{i},{k}"
        for w, c, i, k in [
            (1.5, "red", "true", "cat"),
            (20, "blue", "false", "dog"),
            ("", "red", "true", "cat"),
        ]
        * 4
    ]
    path.write_text("\n".join(rows) + "\n")
    dataset = load_dataset(str(path), "kind")
    assert task_of(dataset) == "classification"
    schema = {f.name: f for f in dataset.feature_schema().features}
    assert schema["weight"].type == "number" and (
        schema["weight"].minimum,
        schema["weight"].maximum,
    ) == (1.5, 20.0)
    assert schema["colour"].type == "string" and schema["colour"].categories == ("blue", "red")
    assert schema["indoor"].type == "boolean"
    assert dataset.info().rows == 12


def test_csv_default_target_is_the_last_column(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a,b,y\n" + "".join(f"{i},{i * 2},{i * 0.5}\n" for i in range(30)))
    dataset = load_dataset(str(path))
    assert dataset.target == "y" and task_of(dataset) == "regression"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ('a,b\n1,"unterminated\n', "not a readable CSV"),
        ("a\n" + "1\n" * 20, "at least one feature"),
        ("a,b\n1,2\n", "at least 10 are needed"),
    ],
)
def test_bad_csv_files_are_refused_in_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as info:
        load_dataset(str(path))
    assert "\n" not in info.value.message


def test_missing_file_unknown_name_and_unknown_column(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_dataset(str(tmp_path / "missing.csv"))
    with pytest.raises(UserError, match="unknown dataset"):
        load_dataset("mnist")
    with pytest.raises(UserError, match="column 'species' is not in dataset iris"):
        load_dataset("iris", "species")


def test_model_names_are_valid_bentoml_names() -> None:
    assert model_name_for("iris", "random_forest") == "iris-random_forest"
    assert model_name_for("/data/My Pets (2024).csv", "ridge") == "my_pets_2024-ridge"
