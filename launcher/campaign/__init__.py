"""Campaigns: a matrix file → a plan of cells → every cell through a launcher → every attempt in
the results store (SQLite or PostgreSQL) → runs, leaderboards, comparisons, an HTML report.

    matrix.py     the matrix file model          plan.py      matrix → cells
    execute.py    running a plan, resume         store.py     the results store (+ migrations/)
    queries.py    leaderboard, runs compare      outcome.py   result → attempt status
    record.py     `kitebench submit`'s attempt   progress.py  live table; html_report.py the page
"""
