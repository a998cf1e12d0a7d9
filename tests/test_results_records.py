"""The seed tables of docs/results.md and README.md are the committed records (docs/records/seeds) averaged:
a run added to the records, or a table edited by hand, without the other moving fails here."""
import importlib.util
import re
import statistics

import pytest

from tests.helpers import ROOT

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


def seed_tables(path):
    """Every markdown table in `path` with a "seeds" column: (header cells, rows of cells)."""
    return seed_tables_with(path, "seeds")


def seed_tables_with(path, column):
    """Every markdown table in `path` with a column headed `column`: (header cells, rows of cells)."""
    tables, current = [], None
    for line in path.read_text().splitlines():
        if not line.startswith("|"):
            current = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if current is None:
            current = (cells, [])
            if column in cells:
                tables.append(current)
        elif not set(line) <= set("|-: "):
            current[1].append(cells)
    return tables


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


def agrees(cell, value):
    """`cell` shows `value` rounded to its own number of decimals (unicode minus allowed)."""
    cell = cell.replace("−", "-")
    decimals = len(cell.partition(".")[2])
    return abs(float(cell) - value) <= 0.5001 * 10 ** -decimals  # a value at the half rounds either way


@pytest.mark.parametrize("page", ["docs/results.md", "README.md"])
def test_seed_tables_are_the_records_mean_and_std(page):
    tables = seed_tables(ROOT / page)
    assert tables, f"{page} has no seed table"
    checked = 0
    for header, rows in tables:
        for cells in rows:
            row = ROWS.get(cells[0])
            if row is None:
                continue  # the committed generator, the real-vs-real row
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
    assert checked >= 4 * 2, f"{page}: only {checked} cells matched a records row"


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
