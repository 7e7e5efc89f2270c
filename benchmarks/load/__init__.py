"""The load benchmark (`python -m benchmarks.load_bench`), one module per job:

cli        its command line
paths      the five paths measured and what each gateway path is measured against
videos     the videos sent, and the direct path's input prepared beforehand
records    one measured request (with the gateway's Server-Timing stages) and the SLOs
sse        the reader of a streamed chat (server-sent events)
client     the HTTP client of the five paths and the concurrent clients of one batch
console    log lines and the progress bar
run        the run: the stack it starts (benchmarks/_load_stack.py), the sweep, its state
stats      per-level statistics, the gateway's cost, where the time goes
report     report.json and the files beside it
tables     the Markdown tables and report.md
csvs       the CSV files
plots      the PNG plots (when matplotlib is importable)
"""
