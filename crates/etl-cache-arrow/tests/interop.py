"""The Python side of the Arrow interop test (tests/interop.rs).

    python interop.py read FILE    # prints what pyarrow and polars read, as JSON
    python interop.py write FILE   # writes the table the Rust side expects

`read` opens an entry's payload, as `etl-cache get KEY -o FILE` writes it,
with pyarrow's IPC file reader, polars.read_ipc and polars.scan_ipc, and
prints a summary of the table each of them saw. `write` writes an IPC file
with pyarrow (zstd body compression, schema metadata, a dictionary column)
for the Rust side to store in the cache and read back as record batches.
"""

import json
import sys

import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc


def summary_pyarrow(path):
    with pa.memory_map(path) as source:
        reader = ipc.open_file(source)
        table = reader.read_all()
        batches = reader.num_record_batches
    schema = table.schema
    category = table.column("category")
    counts = {}
    for value in category.to_pylist():
        counts[value] = counts.get(value, 0) + 1
    tags = table.column("tags").to_pylist()
    points = table.column("point").to_pylist()
    return {
        "rows": table.num_rows,
        "batches": batches,
        "columns": schema.names,
        "schema_metadata": {
            k.decode(): v.decode() for k, v in (schema.metadata or {}).items()
        },
        "id_metadata": {
            k.decode(): v.decode()
            for k, v in (schema.field("id").metadata or {}).items()
        },
        "category_is_dictionary": pa.types.is_dictionary(schema.field("category").type),
        "id_sum": sum(table.column("id").to_pylist()),
        "score_nulls": table.column("score").null_count,
        "score_sum": sum(v for v in table.column("score").to_pylist() if v is not None),
        "names_first": table.column("name").to_pylist()[:3],
        "names_last": table.column("name").to_pylist()[-1],
        "category_counts": counts,
        "tags_values": sum(len(t) for t in tags if t is not None),
        "tags_nulls": sum(1 for t in tags if t is None),
        "point_x_sum": sum(p["x"] for p in points),
    }


def summary_polars(frame):
    counts = frame.group_by("category").len()
    return {
        "rows": frame.height,
        "columns": frame.columns,
        "id_sum": int(frame["id"].sum()),
        "score_nulls": int(frame["score"].null_count()),
        "names_first": frame["name"].head(3).to_list(),
        "category_counts": {
            row[0]: int(row[1]) for row in counts.iter_rows()
        },
    }


def read(path):
    out = {
        "pyarrow": summary_pyarrow(path),
        "polars_read": summary_polars(pl.read_ipc(path)),
        "polars_scan": summary_polars(pl.scan_ipc(path).collect()),
    }
    print(json.dumps(out, sort_keys=True))


def write(path):
    rows = 2500
    schema = pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("label", pa.dictionary(pa.int32(), pa.string())),
            pa.field("weight", pa.float64()),
        ],
        metadata={"written_by": "pyarrow"},
    )
    labels = ["north", "south", "east", "west"]
    options = ipc.IpcWriteOptions(compression="zstd")
    with ipc.new_file(path, schema, options=options) as writer:
        for start in range(0, rows, 1000):
            ids = list(range(start, min(start + 1000, rows)))
            batch = pa.record_batch(
                [
                    pa.array(ids, pa.int64()),
                    pa.DictionaryArray.from_arrays(
                        pa.array([i % 4 for i in ids], pa.int32()), pa.array(labels)
                    ),
                    pa.array([None if i % 5 == 0 else i / 2 for i in ids], pa.float64()),
                ],
                schema=schema,
            )
            writer.write_batch(batch)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("read", "write"):
        sys.exit(__doc__)
    {"read": read, "write": write}[sys.argv[1]](sys.argv[2])
