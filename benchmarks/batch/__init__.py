"""The batch benchmark (`python -m benchmarks.batch_bench`), one module per job:

cli      its command line
api      the Batch API over HTTP: the JSONL uploaded, the batch created, polled, cancelled,
         its output file read
run      the run: the stack it starts (benchmarks/_load_stack.py), the load client's sweep
         (benchmarks/load/client.py), the batch alone, interactive requests idle and beside
         a batch
report   report.json, report.csv, report.md and batch.png
"""
