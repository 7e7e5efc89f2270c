"""The long-video benchmark (`python -m benchmarks.long_bench`), one module per job:

cli      its command line
videos   the synthetic long videos (a colour card and a tone per minute), made once
paths    the four ways of asking about one long video, timed, and the gateway's memory
run      the run: the stack it starts (benchmarks/_load_stack.py), the warm-up, each length
report   report.json, report.csv, report.md and long.png
"""
