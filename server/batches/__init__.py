"""Batches: the OpenAI Batch API on the gateway's database.

POST /v1/batches -> `store.create` (validating) -> the runner validates the input file
(`validate`) and writes one row per line (in_progress) -> runners on every replica
claim lines (`store.claim_lines`, leases renewed while they live), answer them through
the chat service at batch priority (`runner`) and write each result with a conditional
update on the claim (exactly once) -> one replica claims finalization and writes the
output and error files from the line rows (`output`) -> completed (or cancelled,
expired, failed).
"""
