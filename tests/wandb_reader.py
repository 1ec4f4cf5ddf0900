"""Read what an offline W&B 0.31 run recorded: its `.wandb` file holds protobuf Records in a
LevelDB-style log, and wandb ships no reader for it."""

from __future__ import annotations

import json
import struct
from pathlib import Path


def records(path: Path) -> list:
    """Decode a .wandb file: a 7-byte file header, then 32 KiB blocks of (crc32, length, type, data)
    chunks; a record is one FULL chunk or FIRST, MIDDLE..., LAST. Block tails under 7 bytes are padding."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def read_run(run_dir: Path) -> dict:
    """What the run recorded: its run record, merged config and summary, and history rows by step."""
    (wandb_file,) = run_dir.glob("run-*.wandb")
    run, config, summary, history = None, {}, {}, {}
    for record in records(wandb_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            config |= {u.key: json.loads(u.value_json) for u in record.run.config.update}
        elif kind == "config":
            config |= {u.key: json.loads(u.value_json) for u in record.config.update}
        elif kind == "summary":
            summary |= {
                u.key or ".".join(u.nested_key): json.loads(u.value_json) for u in record.summary.update
            }
        elif kind == "history":
            row = {i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            history[row["_step"]] = row
    assert run is not None
    return {"run": run, "config": config, "summary": summary, "history": history}
