"""The seed tables of docs/results.md and README.md are the committed records (docs/records/seeds) averaged:
a run added to the records, or a table edited by hand, without the other moving fails here."""
import importlib.util
import json
import re
import statistics

import pytest

from tests.helpers import ROOT
from tests.markdown_tables import agrees, tables_with

RECORDS = ROOT / "docs" / "records" / "seeds"
STEP = 4000
spec = importlib.util.spec_from_file_location("plot_eval_history", ROOT / "scripts" / "plot_eval_history.py")
plot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plot)

HEADER_METRICS = {"FID ↓": "fid", "KID ↓": "kid", "IS ↑": "is", "precision": "precision", "recall": "recall",
                  "conditional accuracy": "conditional_accuracy"}
ROWS = {  # a table row's label -> the records' row name (<row>_s<seed>)
    "self-attention at 16² in G and D (the default)": "attention",
    "self-attention at 16² in G and D (default)": "attention",
    "default (attention at 16² in G and D)": "attention",
    "no attention": "no_attention",
    "no attention (`g_attention=()`, `d_attention=()`)": "no_attention",
    "attention at 32² in G, 16² in D": "g32_d16",
    "attention at 32² in G only": "g32",
    "default + `g_ortho_reg=1e-4`": "ortho",
    "the default + `g_ortho_reg=1e-4`": "ortho",
}
# Seed-table rows that are no average of docs/records/seeds, by label -> what checks them instead. Any other
# label fails: a new row is either a records row (ROWS) or listed here with its reason.
NON_RECORD_ROWS = {
    # Version 1 of the shipped SavedModel: one run of the default recipe, whose run directory
    # (and eval_history) was lost with its machine. Its scores are checked against the same model's
    # evaluation in docs/figures/truncation.json (untruncated z, stored statistics, 10,000 samples against
    # the test set; `scripts/truncation_sweep.py`).
    "`pretrained/fashion_mnist/1` (the default, one earlier seed)": "committed",
    # Real train images against the test set: what the metrics give for real data under this feature
    # network, not a training run (no seeds, nothing in the records). docs/results.md holds the numbers;
    # README's copy is checked against them.
    "real: 10,000 **train** images vs the test set": "real",
    "real train images vs test": "real",
}
RESULTS_PAGE = "docs/results.md"
TRUNCATION_SWEEP = ROOT / "docs" / "figures" / "truncation.json"
COMMITTED_GENERATOR = "pretrained/fashion_mnist/1"


def seed_tables(path):
    """Every markdown table in `path` with a "seeds" column: (header cells, rows of cells)."""
    return seed_tables_with(path, "seeds")


def seed_tables_with(path, column):
    """Every markdown table in `path` with a column headed `column`: (header cells, rows of cells)."""
    return tables_with(path.read_text(), column)


def record_runs(row):
    """The committed records of one row of the table, one directory per seed."""
    return sorted(RECORDS.glob(f"{row}_s[0-9]*"))


def record_values(row, metric):
    values = []
    for run in record_runs(row):
        history = plot.read_history(str(run))
        assert STEP in history, f"{run} did not evaluate step {STEP}"
        [value] = plot.metric_series({STEP: history[STEP]}, metric)[1]
        values.append(value)
    return values


def committed_generator_scores():
    """{metric: value} of the committed generator's untruncated, stored-statistics evaluation."""
    [entry] = [entry for entry in json.loads(TRUNCATION_SWEEP.read_text())
               if entry["source"] == COMMITTED_GENERATOR and entry["truncation"] is None
               and entry["statistics"] == "stored"]
    return entry["metrics"]


def check_non_record_row(page, kind, header, cells, results_text):
    """Checks one NON_RECORD_ROWS row of `page` as listed there (`results_text`: docs/results.md's text)."""
    if kind == "committed":
        assert cells[header.index("seeds")] == "1", (page, cells)
        scores = committed_generator_scores()
        for title, metric in HEADER_METRICS.items():
            if title not in header:
                continue
            [value] = plot.metric_series({0: scores}, metric)[1]
            cell = cells[header.index(title)]
            if metric == "kid":  # the table shows the run's own step-4,000 evaluation (0.024), the sweep is a
                # later one (0.025); KID is a mean over random subsets, so they agree within the sweep's kid_std
                [std] = plot.metric_series({0: scores}, "kid_std")[1]
                assert abs(float(cell.replace("−", "-")) - value) <= std, (page, cells[0], title, cell, value, std)
            else:
                assert agrees(cell, value), (page, cells[0], title, cell, value)
        return
    assert kind == "real", kind
    assert cells[header.index("seeds")] == "", (page, cells)  # not a run
    [(source_header, source_cells)] = [(source_header, source_cells)
                                       for source_header, rows in tables_with(results_text, "seeds")
                                       for source_cells in rows if NON_RECORD_ROWS.get(source_cells[0]) == "real"]
    for title in HEADER_METRICS:
        if title in header:
            value = float(source_cells[source_header.index(title)].replace("−", "-"))
            assert agrees(cells[header.index(title)], value), (page, cells[0], title, RESULTS_PAGE, value)


def check_seed_tables(page, text, results_text=None):
    """Checks every row of every seed table of the markdown `text` (the page `page`): a ROWS row against
    the records, a NON_RECORD_ROWS row as listed there, any other row fails. Returns the number of
    records-row cells checked."""
    results_text = text if results_text is None else results_text
    tables = tables_with(text, "seeds")
    assert tables, f"{page} has no seed table"
    checked = 0
    for header, rows in tables:
        for cells in rows:
            row = ROWS.get(cells[0])
            if row is None:
                kind = NON_RECORD_ROWS.get(cells[0])
                assert kind is not None, (
                    f"{page}: the seed-table row {cells[0]!r} is checked against nothing: add its label to ROWS "
                    f"in tests/test_results_records.py (mapped to its docs/records/seeds/<row>_s<seed> name), "
                    f"or, if no records average it, to NON_RECORD_ROWS with the reason and a check")
                check_non_record_row(page, kind, header, cells, results_text)
                continue
            assert cells[header.index("seeds")] == str(len(record_runs(row))), cells
            for title, metric in HEADER_METRICS.items():
                if title not in header:
                    continue
                values = record_values(row, metric)
                mean, _, std = cells[header.index(title)].partition(" ± ")
                assert agrees(mean, statistics.fmean(values)), (page, cells[0], title, mean, values)
                if len(values) > 1:
                    assert agrees(std, statistics.stdev(values)), (page, cells[0], title, std, values)
                checked += 1
    return checked


@pytest.mark.parametrize("page", [RESULTS_PAGE, "README.md"])
def test_seed_tables_are_the_records_mean_and_std(page):
    checked = check_seed_tables(page, (ROOT / page).read_text(), (ROOT / RESULTS_PAGE).read_text())
    assert checked >= 4 * 2, f"{page}: only {checked} cells matched a records row"


@pytest.mark.parametrize("page", [RESULTS_PAGE, "README.md"])
def test_a_seed_table_row_with_an_unknown_label_fails(page):
    """A row added to a seed table without a ROWS (or NON_RECORD_ROWS) entry is not skipped."""
    text = (ROOT / page).read_text()
    header, rows = tables_with(text, "seeds")[0]
    [known] = [line for line in text.splitlines() if line.startswith(f"| {rows[0][0]} |")]
    label = "attention at 8² in G and D"
    added = text.replace(known, known + "\n" + known.replace(rows[0][0], label, 1), 1)
    with pytest.raises(AssertionError, match=re.escape(f"{page}: the seed-table row {label!r}") + ".*add its label to ROWS"):
        check_seed_tables(page, added, (ROOT / RESULTS_PAGE).read_text())


@pytest.mark.parametrize("kind", ["committed", "real"])
def test_a_wrong_cell_in_a_non_record_row_fails(kind):
    text = (ROOT / "README.md").read_text()
    [(header, cells)] = [(header, cells) for header, rows in tables_with(text, "seeds") for cells in rows
                         if NON_RECORD_ROWS.get(cells[0]) == kind]
    fid = cells[header.index("FID ↓")]
    [line] = [line for line in text.splitlines() if line.startswith(f"| {cells[0]} |")]
    wrong = line.replace(f"| {fid} |", f"| {float(fid) + 0.5:.2f} |")
    assert wrong != line
    with pytest.raises(AssertionError, match="FID"):
        check_seed_tables("README.md", text.replace(line, wrong), (ROOT / RESULTS_PAGE).read_text())


def test_the_table_parser_sees_a_wrong_cell(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("| 4,000 G steps | seeds | FID ↓ |\n|---|---:|---:|\n| no attention | 3 | 2.05 ± 0.43 |\n\n"
                    "| other | table |\n|---|---|\n| a | b |\n")
    [(header, rows)] = seed_tables(page)
    assert header == ["4,000 G steps", "seeds", "FID ↓"] and rows == [["no attention", "3", "2.05 ± 0.43"]]
    assert agrees("2.05", 2.047) and not agrees("2.05", 2.056) and agrees("−0.0001", -0.00012)


CURVE_COLUMNS = {"default": "attention", "no attention": "no_attention", "32² G, 16² D": "g32_d16",
                 "32² G only": "g32", "default + ortho": "ortho", "ortho": "ortho"}


def test_per_seed_curves_on_the_results_page_are_the_records():
    checked = 0
    for header, rows in seed_tables_with(ROOT / "docs" / "results.md", "G step"):
        for column, title in enumerate(header[1:], 1):
            name, _, seed = title.rpartition(" s")
            history = plot.read_history(str(RECORDS / f"{CURVE_COLUMNS[name]}_s{seed}"))
            for cells in rows:
                fid, accuracy = re.fullmatch(r"([\d.]+) \(([\d.]+)\)", cells[column].replace("**", "")).groups()
                step = int(cells[0].replace(",", ""))
                assert agrees(fid, plot.metric_series({step: history[step]}, "fid")[1][0]), (title, step, fid)
                assert agrees(accuracy, plot.metric_series({step: history[step]}, "conditional_accuracy")[1][0])
                checked += 1
    assert checked >= 11 * 4


WELCH_METRICS = {"FID": "fid", "KID": "kid", "IS": "is", "precision": "precision", "recall": "recall",
                 "conditional accuracy": "conditional_accuracy"}


def test_welch_table_on_the_results_page_is_the_records_t_test():
    """`plot_eval_history.py --welch` wrote it; a seed added to the records without rerunning it fails here."""
    stats = pytest.importorskip("scipy.stats")
    [(header, rows)] = [table for table in seed_tables_with(ROOT / "docs" / "results.md", "metric") if "p" in table[0]]
    checked = 0
    for cells in rows:
        metric = WELCH_METRICS[cells[0]]
        for column in range(1, len(header), 2):
            base, _, other = header[column].partition(" − ")
            a, b = record_values(CURVE_COLUMNS[base], metric), record_values(CURVE_COLUMNS[other], metric)
            assert agrees(cells[column], statistics.fmean(a) - statistics.fmean(b)), (cells[0], header[column])
            assert agrees(cells[column + 1], stats.ttest_ind(a, b, equal_var=False).pvalue), (cells[0], header[column])
            checked += 1
    assert checked == 6 * (len(header) - 1) // 2 >= 6 * 3  # every placement against the default
