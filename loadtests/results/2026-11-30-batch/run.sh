#!/bin/bash
# Run from the project root on 2026-11-30 (2 cores, a training run beside it); the repository was the
# default vision build of this tree: .venv/bin/python -m builders vision --out build/batch-dev/vrepo
# The README's batch run: 30 synthetic frames (+ one truncated JPEG) scored by the batch command, then rerun.
cd /work/main
OUT=loadtests/results/2026-11-30-batch
FR=build/batch-dev/frames
rm -rf "$FR" "$OUT"; mkdir -p "$OUT"
cp build/batch-dev/readme_run.sh "$OUT/run.sh"; cp build/batch-dev/closed_loop.py "$OUT/closed_loop.py"
.venv/bin/python - "$FR" <<'PY'
import io, sys
from pathlib import Path
import numpy as np
from PIL import Image
from clients.synthetic import synthetic_frame

root = Path(sys.argv[1])
levels = np.random.default_rng(0).uniform(0.05, 0.95, 30)
for i, level in enumerate(levels):
    robot = "robot-a" if i < 15 else "robot-b"
    img = synthetic_frame(seed=i, oil_level=float(level))
    (root / robot).mkdir(parents=True, exist_ok=True)
    if i % 5 == 4:  # some cameras send 1080p PNG
        img.resize((1920, 1080), Image.Resampling.BILINEAR).save(root / robot / f"frame-{i:03d}.png")
    else:
        img.save(root / robot / f"frame-{i:03d}.jpg", quality=90)
data = (root / "robot-a" / "frame-000.jpg").read_bytes()
(root / "robot-b" / "frame-030.jpg").write_bytes(data[: len(data) * 2 // 5])  # a transfer that broke off
PY
echo "before: $(uptime)" > "$OUT/machine.txt"; nproc >> "$OUT/machine.txt"
read HTTP GRPC METRICS < <(.venv/bin/python -c "from serving.launcher import free_ports; print(*free_ports(3))")
CMD=".venv/bin/python -m clients.clo --batch $FR --out $OUT/results.csv --url 127.0.0.1:$HTTP"
echo "\$ $CMD" > "$OUT/batch.log"
echo "\$ $CMD" > "$OUT/rerun.log"
.venv/bin/python -m serving --model-repository build/batch-dev/vrepo --http-port $HTTP --grpc-port $GRPC \
  --metrics-port $METRICS --quiet --log-file build/batch-dev/triton.log -- \
  sh -c "$CMD >> $OUT/batch.log 2>&1; echo \"exit code \$?\" >> $OUT/batch.log; cp $OUT/results.summary.json $OUT/first-run.summary.json; $CMD >> $OUT/rerun.log 2>&1; echo \"exit code \$?\" >> $OUT/rerun.log; PYTHONPATH=/work/main .venv/bin/python build/batch-dev/closed_loop.py 127.0.0.1:$HTTP $FR > $OUT/closed_loop.json"
echo "after:  $(uptime)" >> "$OUT/machine.txt"; ps -eo pcpu,cmd --sort=-pcpu | head -4 | cut -c1-100 >> "$OUT/machine.txt"
cat "$OUT/batch.log" "$OUT/rerun.log" "$OUT/machine.txt"
