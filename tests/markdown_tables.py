"""Reading the Markdown tables of the docs, for the tests that check them against the committed records."""


def tables_with(text, column):
    """Every markdown table in the markdown `text` with a column headed `column`: (header cells, rows of cells)."""
    tables, current = [], None
    for line in text.splitlines():
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


def agrees(cell, value):
    """`cell` shows `value` rounded to its own number of decimals (unicode minus allowed)."""
    cell = cell.replace("−", "-")
    decimals = len(cell.partition(".")[2])
    return abs(float(cell) - value) <= 0.5001 * 10 ** -decimals  # a value at the half rounds either way
