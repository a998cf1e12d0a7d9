"""docs/results.md's lead table (shipped model, quickstart, real data) and its recipe-study table are the
committed evaluation records: a record re-measured, or a cell edited by hand, without the other fails here."""
import json

import pytest

from benchmarks import recipe_study
from tests.helpers import ROOT, shipped_generator
from tests.markdown_tables import agrees, tables_with

RESULTS = ROOT / "docs" / "results.md"
NETWORK = "fashion_mnist_classifier"
LEAD_METRICS = {"FID ↓": "fid", "KID ↓": "kid", "IS ↑": "is", "precision": "precision", "recall": "recall",
                "conditional accuracy": "conditional_accuracy"}
STUDY_METRICS = {"FID": "fid", "precision": "precision", "recall": "recall", "accuracy": "conditional_accuracy"}


def lead_rows(text):
    """(header, rows) of the results page's table with a "record" column: one trainers.evaluate JSON per row."""
    [(header, rows)] = tables_with(text, "record")
    return header, rows


def check_lead_table(text):
    header, rows = lead_rows(text)
    checked = 0
    for cells in rows:
        path = ROOT / cells[header.index("record")].strip("`")
        record = json.loads(path.read_text())
        assert record["num_samples"] == 10000 and record["network"] == NETWORK, (path, record["num_samples"])
        assert record["reference"] == {"dataset": "fashion_mnist_test", "num": 10000, "num_features": 10000}, path
        for title, metric in LEAD_METRICS.items():
            assert agrees(cells[header.index(title)], record["metrics"][f"{metric}/{NETWORK}"]), (cells[0], title, path)
            checked += 1
    return checked


@pytest.mark.parametrize("page", ["docs/results.md", "README.md"])
def test_the_lead_table_is_the_committed_evaluations(page):
    text = (ROOT / page).read_text()
    header, rows = lead_rows(text)
    labels = [cells[0] for cells in rows]
    assert len(labels) == 3 and "shipped" in labels[0] and "quickstart" in labels[1] and "real" in labels[2], labels
    assert check_lead_table(text) == 3 * len(LEAD_METRICS)


@pytest.mark.parametrize("page", ["docs/results.md", "README.md"])
def test_the_shipped_row_is_the_shipped_generator(page):
    """The lead row's record scored the version TF-Serving serves (the highest one), at the step it exported."""
    generator = shipped_generator()
    header, rows = lead_rows((ROOT / page).read_text())
    record = json.loads((ROOT / rows[0][header.index("record")].strip("`")).read_text())
    metadata = json.loads((generator / "assets.extra" / "sagan_export.json").read_text())
    assert record["checkpoint"] == str(generator.relative_to(ROOT)) and record["step"] == metadata["step"]
    assert f"`{generator.relative_to(ROOT)}`" in rows[0][0] and rows[0][header.index("G steps")] == f"{record['step']:,}"


def test_a_wrong_lead_cell_fails():
    text = RESULTS.read_text()
    header, rows = lead_rows(text)
    fid = rows[0][header.index("FID ↓")]
    [line] = [line for line in text.splitlines() if line.startswith(f"| {rows[0][0]} |")]
    wrong = line.replace(f"| {fid} |", f"| {float(fid) + 0.1:.2f} |", 1)
    assert wrong != line
    with pytest.raises(AssertionError, match="FID"):
        check_lead_table(text.replace(line, wrong))


def study_cells(text):
    """{(recipe, step): cells} of the results page's recipe-study table (columns recipe, step, CPU-h, ...)."""
    [(header, rows)] = [table for table in tables_with(text, "recipe") if "CPU-h" in table[0] and "step" in table[0]]
    return header, {(cells[header.index("recipe")], int(cells[header.index("step")].replace(",", ""))): cells
                    for cells in rows}


def check_study_table(text, records):
    header, cells = study_cells(text)
    points = {(row["recipe"], row["step"]): row for row in recipe_study.table_rows(str(records))}
    assert set(cells) == set(points), sorted(set(cells) ^ set(points))
    for key, row in points.items():
        assert agrees(cells[key][header.index("CPU-h")], row["CPU-h"]), (key, "CPU-h")
        for title, metric in STUDY_METRICS.items():
            assert agrees(cells[key][header.index(title)], row[title]), (key, title)
    return len(points)


def test_the_study_table_is_every_recorded_point():
    assert check_study_table(RESULTS.read_text(), ROOT / "docs" / "records" / "study") >= 10


def test_a_recorded_point_missing_from_the_study_table_fails(tmp_path):
    records = tmp_path / "study"
    for path in (ROOT / "docs" / "records" / "study").glob("*.jsonl"):
        (records / path.name).parent.mkdir(exist_ok=True)
        (records / path.name).write_text(path.read_text())
    [first] = list(records.glob("base.jsonl"))
    point = json.loads(first.read_text().splitlines()[0])
    recipe_study.append_point(str(records), "base", dict(point, step=point["step"] + 1))
    with pytest.raises(AssertionError):
        check_study_table(RESULTS.read_text(), records)
